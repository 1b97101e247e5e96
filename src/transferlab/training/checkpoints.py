"""Per-epoch bookkeeping: metrics rows, best model, resumable checkpoint, early stopping.

Early stopping and best-model selection live in one callback (rather than Keras's
EarlyStopping and ModelCheckpoint) because their counters must survive a restart:
they are part of the phase state, committed with every checkpoint and read back on
resume.
"""

from __future__ import annotations

import math
import time
import zlib
from pathlib import Path

import keras
import numpy as np
from keras import ops

from transferlab.models.split import leaf_layers
from transferlab.runs import PhasePaths, metrics_row, write_metrics
from transferlab.training.distributed import local_only
from transferlab.training.state import PhaseState, commit


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters can be saved and restored.

    ``trained_with`` is the learning rate of the epoch that just ended: at its end this
    callback may already have lowered the optimizer's rate for the next one.
    """

    def __init__(self, saved: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.saved = saved
        self.trained_with: float | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved:
            self.wait = self.saved["wait"]
            self.best = self.saved["best"]
            self.cooldown_counter = self.saved["cooldown_counter"]

    def on_epoch_end(self, epoch, logs=None):
        self.trained_with = current_learning_rate(self.model)
        super().on_epoch_end(epoch, logs)

    def state(self) -> dict:
        return {
            "wait": self.wait,
            "best": float(self.best),
            "cooldown_counter": self.cooldown_counter,
        }


def current_learning_rate(model) -> float:
    """The optimizer's learning rate now (a schedule's value at the current step)."""
    return float(ops.convert_to_numpy(model.optimizer.learning_rate))


class ReseedEachEpoch(keras.callbacks.Callback):
    """Start every epoch's random streams (dropout, augmentation) from (seed, epoch).

    Keras keeps them in seed-generator variables that a saved model does not hold; set
    from the epoch number, a run resumed at epoch k draws what an uninterrupted run drew.
    Each stream is told apart by its layer's name, not its position in the model, so a
    layer draws the same in the full model and in a suffix trained on cached outputs.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for layer in leaf_layers(self.model):
            generators = [v for v in layer.variables if "seed_generator_state" in v.path]
            for index, variable in enumerate(generators):
                stream = zlib.crc32(f"{layer.name}/{index}".encode()) % 1_000_003
                start = np.array([self.seed, epoch * 1_000_003 + stream], dtype=variable.dtype)
                variable.assign(start)


class EpochCheckpoint(keras.callbacks.Callback):
    """At each epoch end: log a row, update the phase state, commit a checkpoint.

    ``state`` is updated in place; ``rows`` are the metrics.csv rows so far. The model
    checkpointed is ``saved`` (the full model, or the suffix trained on cached outputs,
    ending in the softmax) when ``fit`` trains a view of its logits; else the model fit.
    Nothing runs per batch (a per-batch hook would switch off Keras's asynchronous
    batches): a NaN loss shows in the epoch's mean loss and stops the phase at that
    epoch's end, before its checkpoint is written.
    """

    def __init__(
        self,
        paths: PhasePaths,
        state: PhaseState,
        rows: list[dict],
        metrics_path: Path,
        patience: int,
        plateau: ResumablePlateau | None = None,
        write: bool = True,
        saved: keras.Model | None = None,
    ):
        super().__init__()
        self.paths, self.state, self.rows = paths, state, rows
        self.metrics_path, self.patience = metrics_path, patience
        self.plateau, self.write = plateau, write
        self.saved = saved
        self.nan_epoch = 0  # the epoch whose loss became NaN, counted from 1
        self.started = time.perf_counter()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            self.nan_epoch = epoch + 1
            self.model.stop_training = True
            return
        # The rate this epoch trained with, not the one a plateau just set for the next.
        plateau = self.plateau
        learning_rate = (
            plateau.trained_with
            if plateau is not None and plateau.trained_with is not None
            else current_learning_rate(self.model)
        )
        row = metrics_row(epoch + 1, logs, learning_rate, time.perf_counter() - self.started)
        self.rows.append(row)
        state = self.state
        value = row[state.monitor]
        improved = value > state.best
        if improved:
            state.best, state.best_epoch, state.wait = value, epoch + 1, 0
        else:
            state.wait += 1
        state.epoch = epoch + 1
        if self.plateau is not None:
            state.plateau = self.plateau.state()
        if self.patience and state.wait >= self.patience:
            state.stop_reason = "early_stopping"
            self.model.stop_training = True
        if self.write:
            write_metrics(self.metrics_path, self.rows)
            # Saving makes Keras objects of its own; across processes they must stay local.
            with local_only():
                commit(state, self.paths, self.saved or self.model, improved)
