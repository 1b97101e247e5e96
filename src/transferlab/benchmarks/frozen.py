"""Frozen-phase cost: feature-cached phase 1 against end-to-end frozen training."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import keras

from transferlab.benchmarks.pipeline import write_synthetic_folder
from transferlab.benchmarks.timing import figure, ratio_figure
from transferlab.config import Config

# The goals: cached phase 1 at least this many times faster, per epoch count.
FROZEN_GOALS = {10: 5.0, 30: 10.0}


def frozen_config(cfg: Config, images: Path, run_dir: Path, epochs: int, cached: bool) -> Config:
    """The configured phase 1 on the synthetic folder, every output under ``run_dir``."""
    run = copy.deepcopy(cfg)
    run.experiment = "bench_frozen"
    run.output_dir = str(run_dir / "outputs")
    run.models_dir = str(run_dir / "models")
    run.checkpoints_dir = str(run_dir / "checkpoints")
    run.data = type(cfg.data)(kind="folder", data_dir=str(images), splits=[0.8, 0.2, 0.0])
    run.model.image_size = cfg.bench.frozen_image_size
    run.model.weights = "none"
    # Augmentation would switch caching off in both runs; the benchmark compares the two.
    run.model.augmentation = []
    # Dropout draws differ between the head alone and the full model; without it both
    # arms compute the same function, so equal losses show caching changes speed only.
    run.model.dropout = 0.0
    run.train.cache_features = cached
    run.phase1.epochs = epochs
    run.phase1.patience = 0  # every epoch runs: both arms do the same work
    return run


class EpochClock(keras.callbacks.Callback):
    """When each epoch ended, after train_phase's own callbacks wrote its checkpoint."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def phase_seconds(start: float, clock: EpochClock, end: float, epochs: list[int]) -> dict:
    """Wall time a phase 1 of each length in ``epochs`` takes, from one longer run.

    A run of E epochs is this run up to the end of epoch E (checkpoint written), plus
    the work after the last epoch (final model save, summary), which it does once too.
    With ``patience=0`` its first E epochs are those of the E-epoch run.
    """
    finish = end - clock.ends[-1]
    return {e: clock.ends[e - 1] - start + finish for e in epochs}


def frozen_phase(cfg: Config, work_dir: Path, warmup: bool = True) -> dict:
    """Wall time of phase 1 with cached features and end to end, same data, seed and model.

    Each repeat runs both arms back to back, so a change in machine load hits both; each
    arm runs max(E) epochs once and every E in ``bench.frozen_epochs`` is read from it.
    """
    from transferlab.runs import read_metrics
    from transferlab.training import train_phase

    bench = cfg.bench
    # Two classes: the head's size barely matters, and a tiny N still splits stratified.
    images = write_synthetic_folder(
        work_dir / "frozen_images", bench.frozen_images, bench.frozen_image_size, classes=2
    )
    runs = iter(range(10**6))

    def timed(epochs: list[int], cached: bool) -> list[dict]:
        run_cfg = frozen_config(cfg, images, work_dir / f"run{next(runs)}", max(epochs), cached)
        clock = EpochClock()
        start = time.perf_counter()
        result = train_phase(run_cfg, "phase1", callbacks=[clock])
        seconds = phase_seconds(start, clock, time.perf_counter(), epochs)
        rows = read_metrics(result.run_dir / "metrics.csv")
        return [
            {
                "epochs": e,
                "cached": cached,
                "s": seconds[e],
                "val_loss": rows[e - 1]["val_loss"],
                "feature_cache_s": result.summary.get("feature_cache_s"),
                "fit_epochs_s": sum(r["epoch_time"] for r in rows[:e]),
            }
            for e in epochs
        ]

    keras.config.disable_interactive_logging()  # no progress bars for dozens of fits
    try:
        if warmup:
            timed([1], True)  # first-call costs (imports, TensorBoard) are not phase 1's
        results = []
        for _ in range(bench.repeats):
            for cached in (True, False):
                results += timed(bench.frozen_epochs, cached)
    finally:
        keras.config.enable_interactive_logging()
    figures = []
    for epochs in bench.frozen_epochs:
        seconds = {
            arm: [r["s"] for r in results if r["epochs"] == epochs and r["cached"] == arm]
            for arm in (True, False)
        }
        cached_row = figure("phase1_cached", "s", seconds[True], epochs=epochs)
        e2e_row = figure("phase1_end_to_end", "s", seconds[False], epochs=epochs)
        goal = FROZEN_GOALS.get(epochs)
        ratio_row = ratio_figure("speedup", e2e_row, cached_row, epochs=epochs, goal=goal)
        ratio_row["goal_met"] = None if goal is None else ratio_row["median"] >= goal
        figures += [cached_row, e2e_row, ratio_row]
    losses = {(r["epochs"], r["cached"]): r["val_loss"] for r in results}
    return {
        "benchmark": "frozen_phase",
        # Same results: the largest validation-loss gap between the two arms at any E.
        "val_loss_gap": max(abs(losses[e, True] - losses[e, False]) for e in bench.frozen_epochs),
        "backbone": cfg.model.backbone,
        "images": bench.frozen_images,
        "image_size": bench.frozen_image_size,
        "batch_size": cfg.train.batch_size,
        "figures": figures,
        # Every run's time and validation loss at each E: the two arms should agree.
        "results": results,
    }
