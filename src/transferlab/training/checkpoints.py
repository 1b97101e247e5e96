"""Per-epoch bookkeeping: metrics rows, best model, resumable checkpoint, early stopping.

Early stopping and best-model selection live in one callback (rather than Keras's
EarlyStopping and ModelCheckpoint) because their counters must survive a restart:
they are written with every checkpoint and read back on resume.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path

import keras
from keras import ops

from transferlab.config import Config
from transferlab.runs import PhasePaths, atomic_path, metrics_row, read_json, write_metrics


def config_fingerprint(cfg: Config) -> dict:
    # Round-trip through JSON so it compares equal to what the state file holds.
    return json.loads(json.dumps(cfg.to_dict()))


def resumable_state(paths: PhasePaths, cfg: Config) -> dict | None:
    """The saved state of an interrupted run of this phase with this config, or None."""
    if not (paths.state.is_file() and paths.last.is_file()):
        return None
    state = read_json(paths.state)
    if state.get("finished"):
        return None
    if state.get("config") != config_fingerprint(cfg):
        print(
            f"[transferlab] {paths.state} is from a run with another config; starting afresh",
            flush=True,
        )
        return None
    return state


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters can be saved and restored."""

    def __init__(self, saved: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.saved = saved

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved:
            self.wait = self.saved["wait"]
            self.best = self.saved["best"]
            self.cooldown_counter = self.saved["cooldown_counter"]

    def state(self) -> dict:
        return {
            "wait": self.wait,
            "best": float(self.best),
            "cooldown_counter": self.cooldown_counter,
        }


class EpochCheckpoint(keras.callbacks.Callback):
    """At each epoch end: log a row, keep the best model, save a resumable checkpoint.

    ``state`` is the dict written to the state file: epoch (completed, from 1), best,
    best_epoch, wait, stop_reason, run_dir, ... It is updated in place. The model being
    fit is saved to ``best_path`` when it improves: the full model, or in feature-cached
    phase 1 the head alone. ``rows`` are the metrics.csv rows so far.
    """

    def __init__(
        self,
        paths: PhasePaths,
        state: dict,
        rows: list[dict],
        metrics_path: Path,
        monitor: str,
        patience: int,
        best_path: Path,
        plateau: ResumablePlateau | None = None,
        write: bool = True,
    ):
        super().__init__()
        self.paths, self.state, self.rows = paths, state, rows
        self.metrics_path, self.monitor, self.patience = metrics_path, monitor, patience
        self.best_path, self.plateau, self.write = best_path, plateau, write
        self.nan_batch: tuple[int, int] | None = None
        self.started = time.perf_counter()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.nan_batch = (self.epoch + 1, batch + 1)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.nan_batch or not math.isfinite(float(logs.get("loss", 0.0))):
            self.nan_batch = self.nan_batch or (epoch + 1, 0)
            self.model.stop_training = True
            return
        learning_rate = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = metrics_row(epoch + 1, logs, learning_rate, time.perf_counter() - self.started)
        self.rows.append(row)
        value = row[self.monitor]
        improved = value > self.state["best"]
        if improved:
            self.state.update(best=value, best_epoch=epoch + 1, wait=0)
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch + 1
        if self.plateau is not None:
            self.state["plateau"] = self.plateau.state()
        if self.patience and self.state["wait"] >= self.patience:
            self.state["stop_reason"] = "early_stopping"
            self.model.stop_training = True
        if self.write:
            write_metrics(self.metrics_path, self.rows)
            self.save(improved)

    def save(self, improved: bool) -> None:
        # Every file goes to a temporary name first; the renames happen together at
        # the end, state last, so a kill leaves either the old or the new checkpoint.
        with ExitStack() as stack:
            state_tmp = stack.enter_context(atomic_path(self.paths.state))
            state_tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")
            self.model.save(stack.enter_context(atomic_path(self.paths.last)))
            if improved:
                self.model.save(stack.enter_context(atomic_path(self.best_path)))
