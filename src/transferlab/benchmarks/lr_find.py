"""Phase-1 learning-rate finder speed: `make lr-find` at the frozen benchmark's size."""

from __future__ import annotations

import time
from pathlib import Path

import keras

from transferlab.benchmarks.frozen import frozen_config
from transferlab.benchmarks.pipeline import write_synthetic_folder
from transferlab.benchmarks.timing import figure
from transferlab.config import Config

# The goal: the phase-1 finder finishes in under this many seconds.
LR_FIND_GOAL_S = 10.0


def lr_find_speed(cfg: Config, work_dir: Path) -> dict:
    """Wall time of ``find_learning_rate`` (phase 1, ``cfg.lr_find``'s steps and seeds).

    Timed as `make lr-find` runs it once the backbone features are cached (by an earlier
    lr-find, sweep or cv of the same data): ``bench.repeats`` runs, each from the
    cached features to its written run folder. The first run, which computes the
    features, is timed apart: that backbone pass is paid once per dataset and model.
    """
    from transferlab.experiments.lr_finder import find_learning_rate

    images = write_synthetic_folder(
        work_dir / "lr_find_images", cfg.bench.frozen_images, cfg.bench.frozen_image_size, 2
    )
    run_cfg = frozen_config(cfg, images, work_dir / "lr_find", epochs=1, cached=True)
    run_cfg.experiment = "bench_lr_find"
    run_cfg.lr_find.phase = "phase1"
    keras.config.disable_interactive_logging()
    try:
        start = time.perf_counter()
        first = find_learning_rate(run_cfg)
        cold = time.perf_counter() - start
        warm, results = [], []
        for _ in range(cfg.bench.repeats):
            start = time.perf_counter()
            results.append(find_learning_rate(run_cfg))
            warm.append(time.perf_counter() - start)
    finally:
        keras.config.enable_interactive_logging()
    row = figure("lr_find_phase1", "s", warm, goal=LR_FIND_GOAL_S)
    row["goal_met"] = row["median"] < LR_FIND_GOAL_S
    return {
        "benchmark": "lr_find_speed",
        "backbone": cfg.model.backbone,
        "images": cfg.bench.frozen_images,
        "image_size": cfg.bench.frozen_image_size,
        "batch_size": cfg.train.batch_size,
        "steps": cfg.lr_find.steps,
        "seeds": cfg.lr_find.seeds,
        "figures": [row, figure("lr_find_phase1_first", "s", [cold], computes_features=True)],
        # The same data and seeds give the same suggestion every time.
        "suggestions": [first.suggestion] + [r.suggestion for r in results],
        "steps_run": [len(c) for c in first.test.curves],
    }
