"""Frozen-phase cost: feature-cached phase 1 against end-to-end frozen training.

The cached runs also split each epoch into its training steps, its validation pass and
its end (metrics row, checkpoint commit, TensorBoard), and the steps are compared with a
bare ``model.fit`` of the same head on the same feature arrays, in the same run.
"""

from __future__ import annotations

import copy
import statistics
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
    """When each epoch began, its validation began and ended, and the epoch ended (after
    train_phase's own callbacks wrote its checkpoint): per-epoch seconds of each part."""

    def __init__(self):
        super().__init__()
        self.begins: list[float] = []
        self.test_begins: list[float] = []
        self.test_ends: list[float] = []
        self.ends: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        self.test_begins.append(time.perf_counter())

    def on_test_end(self, logs=None):
        self.test_ends.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())

    def parts(self) -> dict[str, list[float]]:
        """Seconds per epoch: training steps, validation, and the epoch's end (checkpoint)."""
        return {
            "steps": [t - b for b, t in zip(self.begins, self.test_begins, strict=True)],
            "validation": [e - t for t, e in zip(self.test_begins, self.test_ends, strict=True)],
            "commit": [e - t for t, e in zip(self.test_ends, self.ends, strict=True)],
        }


def steady(seconds: list[float]) -> float:
    """The median epoch after the first, which also traces the step functions."""
    return statistics.median(seconds[1:] or seconds)


class StepClock(keras.callbacks.Callback):
    """Seconds of each epoch of a bare ``model.fit`` (no validation: steps only)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def bare_head_fit(cfg: Config, images: Path, epochs: int) -> list[float]:
    """Per-epoch seconds of a plain ``model.fit`` of phase 1's head on the same features.

    The same model (same seed), the same float16 features the product caches, the same
    batch size and training-split size; Keras defaults otherwise (one step per call).
    """
    import numpy as np

    from transferlab.data import load_dataset, prepare_splits
    from transferlab.data.pipeline import input_size_for, labels_of
    from transferlab.models import build_head_model, build_model
    from transferlab.models.split import HEAD_CUT, prefix_model
    from transferlab.training.features import cache_prefix
    from transferlab.training.optim import compile_model, make_optimizer

    run = frozen_config(cfg, images, images.parent / "bare", epochs, cached=True)
    dataset = load_dataset(run)
    splits = prepare_splits(run, dataset)
    size = input_size_for(run, dataset)
    keras.utils.set_random_seed(run.seed)
    model = build_model(run, dataset.num_classes, size)
    cache = cache_prefix(
        prefix_model(model, HEAD_CUT), HEAD_CUT, dataset, splits, size, run, "bare"
    )
    features = np.asarray(cache.outputs[: len(splits.train)], dtype=np.float32)
    labels = np.eye(dataset.num_classes, dtype=np.float32)[labels_of(dataset, splits.train)]
    head = build_head_model(run, dataset.num_classes, features.shape[1])
    steps = -(-len(features) // run.train.batch_size)
    trainer = compile_model(head, run, make_optimizer(run.phase1, None, steps))
    clock = StepClock()
    trainer.fit(
        features,
        labels,
        batch_size=run.train.batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[clock],
    )
    return clock.seconds


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
    epoch_parts: dict[str, list[float]] = {}

    def timed(epochs: list[int], cached: bool, record_parts: bool = True) -> list[dict]:
        run_cfg = frozen_config(cfg, images, work_dir / f"run{next(runs)}", max(epochs), cached)
        clock = EpochClock()
        start = time.perf_counter()
        result = train_phase(run_cfg, "phase1", callbacks=[clock])
        seconds = phase_seconds(start, clock, time.perf_counter(), epochs)
        rows = read_metrics(result.run_dir / "metrics.csv")
        if cached and record_parts:
            # Steady state: the first epoch also traces the step and validation functions.
            for part, per_epoch in clock.parts().items():
                epoch_parts.setdefault(part, []).append(steady(per_epoch))
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
            # First-call costs (imports, TensorBoard) are not phase 1's.
            timed([1], True, record_parts=False)
        results = []
        bare = []
        for _ in range(bench.repeats):
            for cached in (True, False):
                results += timed(bench.frozen_epochs, cached)
            bare_epochs = bare_head_fit(cfg, images, max(bench.frozen_epochs))
            bare.append(steady(bare_epochs))
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
        # A cached epoch in parts, and its steps against a bare model.fit.
        "epoch_split": epoch_split_figures(epoch_parts, bare),
        # Every run's time and validation loss at each E: the two arms should agree.
        "results": results,
    }


# The issue's goal: cached phase 1's training steps within this factor of a bare fit's.
STEPS_GOAL = 2.0


def epoch_split_figures(parts: dict[str, list[float]], bare: list[float]) -> list[dict]:
    """A cached phase 1 epoch in parts (median epoch of each repeat), and its steps over
    a bare ``model.fit``'s epoch."""
    rows = [figure(f"phase1_cached_epoch_{part}", "s", seconds) for part, seconds in parts.items()]
    bare_row = figure("bare_fit_epoch_steps", "s", bare)
    steps_row = rows[0]
    ratio = ratio_figure("steps_over_bare_fit", steps_row, bare_row, goal=STEPS_GOAL)
    ratio["goal_met"] = ratio["median"] <= STEPS_GOAL
    return [*rows, bare_row, ratio]
