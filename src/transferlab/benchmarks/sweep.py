"""Sweep cost: a whole sweep on cached features against one end-to-end phase 1."""

from __future__ import annotations

import time
from pathlib import Path

from transferlab.benchmarks.frozen import frozen_config
from transferlab.benchmarks.pipeline import write_synthetic_folder
from transferlab.benchmarks.timing import figure, ratio_figure
from transferlab.config import Config

# The goal: the sweep takes at most this many end-to-end phase 1s of its epochs.
SWEEP_GOAL = 1.5


def sweep_speed(cfg: Config, work_dir: Path, frozen: dict) -> dict:
    """Wall time of ``bench.sweep_trials`` trials of E epochs, features computed from cold.

    E is the shortest of ``bench.frozen_epochs``; the baseline is ``frozen``'s (the
    frozen-phase result's) end-to-end phase 1 of E epochs on the same synthetic images,
    model and seed. Each repeat starts from an empty output folder, so it computes the
    backbone features (timed apart) and creates its study before running every trial.
    """
    from transferlab.experiments.features import backbone_features
    from transferlab.experiments.sweep import run_sweep

    bench = cfg.bench
    epochs = min(bench.frozen_epochs)
    # The frozen-phase benchmark's images: same count, side, classes and seed.
    images = write_synthetic_folder(
        work_dir / "sweep_images", bench.frozen_images, bench.frozen_image_size, classes=2
    )
    runs = []
    for repeat in range(bench.repeats):
        run = frozen_config(cfg, images, work_dir / f"sweep{repeat}", epochs, cached=True)
        run.experiment = "bench_sweep"
        run.sweep.trials, run.sweep.epochs, run.sweep.workers = bench.sweep_trials, [epochs], 1
        start = time.perf_counter()
        backbone_features(run)  # the cold cache: the sweep's first cost
        features = time.perf_counter() - start
        result = run_sweep(run)
        total = time.perf_counter() - start
        runs.append({"s": total, "features_s": features, "trials_s": total - features,
                     **result.counts})  # fmt: skip
    sweep_row = figure("sweep", "s", [r["s"] for r in runs], epochs=epochs)
    e2e = next(
        r for r in frozen["figures"] if r["figure"] == "phase1_end_to_end" and r["epochs"] == epochs
    )
    baseline_row = {**e2e, "figure": "phase1_end_to_end"}
    ratio_row = ratio_figure("sweep_over_phase1", sweep_row, e2e, epochs=epochs, goal=SWEEP_GOAL)
    ratio_row["goal_met"] = ratio_row["median"] <= SWEEP_GOAL
    return {
        "benchmark": "sweep_speed",
        "backbone": cfg.model.backbone,
        "images": bench.frozen_images,
        "image_size": bench.frozen_image_size,
        "batch_size": cfg.train.batch_size,
        "trials": bench.sweep_trials,
        "epochs": epochs,
        "figures": [sweep_row, baseline_row, ratio_row],
        # Per repeat: features and trials apart, and how many trials were pruned.
        "results": runs,
    }
