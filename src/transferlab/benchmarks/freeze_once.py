"""Phase 2 from conv5 (no augmentation): conv4's output cached against end to end.

Both arms are the product's own phase 2 (``train_phase``), from the same phase 1 model,
on synthetic images at ``bench.phase2_image_size`` (the real experiment's 224 px). The
measured per-epoch ratio is set beside the limit the FLOPs allow: end to end, a training
step runs the frozen prefix forward and the suffix forward and backward; on the cache,
the suffix alone. Each arm's epoch is also split into its training steps, validation and
epoch end (checkpoint commit), which does not shrink with the cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras

from transferlab.benchmarks.frozen import EpochClock, frozen_config, steady
from transferlab.benchmarks.hardware import count_flops
from transferlab.benchmarks.pipeline import write_synthetic_folder
from transferlab.benchmarks.timing import figure, ratio_figure
from transferlab.config import Config

# The goal: cached phase 2 epochs at least this many times faster.
PHASE2_GOAL = 2.0
STAGE = "conv5"


def phase2_config(cfg: Config, images: Path, work_dir: Path, cached: bool) -> Config:
    """The frozen benchmark's phase 1 settings at phase 2's image size, then phase 2 from
    conv5 for the epochs."""
    run = frozen_config(cfg, images, work_dir, epochs=0, cached=cached)
    run.experiment = "bench_phase2"
    run.model.image_size = cfg.bench.phase2_image_size
    run.phase2.unfreeze_from = STAGE
    run.phase2.epochs = cfg.bench.phase2_epochs
    run.phase2.patience = 0  # every epoch runs: both arms do the same work
    return run


def prefix_flops(cfg: Config, num_classes: int = 2) -> dict:
    """Forward FLOPs per image of the whole model and of its frozen prefix up to conv5."""
    from transferlab.models import build_model, unfreeze_from
    from transferlab.models.split import find_cut, prefix_model

    size = cfg.bench.phase2_image_size
    run = phase2_config(cfg, Path("."), Path("."), cached=True)
    model = unfreeze_from(build_model(run, num_classes, size), STAGE, cfg.model.backbone)
    cut = find_cut(model)
    whole = count_flops(model)
    prefix = count_flops(prefix_model(model, cut.layer)) if cut.layer else 0
    suffix = whole - prefix
    # Training counted as 3x forward (forward, and backward for activations and
    # weights); the frozen prefix runs forward only, end to end.
    return {
        "cut": cut.layer,
        "whole_flops": whole,
        "prefix_flops": prefix,
        "prefix_share": prefix / whole,
        "flop_limit": (prefix + 3 * suffix) / (3 * suffix),
    }


def phase2_cached(cfg: Config, work_dir: Path) -> dict:
    """Per-epoch seconds of phase 2 from conv5, cached against end to end, side by side.

    Per arm and repeat: the median epoch after the first (the first also traces), the
    same for each part of the epoch, and the one-time cost of computing the cache. Each
    repeat runs both arms back to back.
    """
    from transferlab.runs import read_metrics
    from transferlab.training import train_phase

    bench = cfg.bench
    images = write_synthetic_folder(
        work_dir / "phase2_images", bench.phase2_images, bench.phase2_image_size, classes=2
    )
    start_cfg = phase2_config(cfg, images, work_dir / "phase2", cached=True)
    keras.config.disable_interactive_logging()
    try:
        train_phase(start_cfg, "phase1")  # 0 epochs: the built model is phase 2's start
        epoch_s = {True: [], False: []}
        parts: dict[tuple[bool, str], list[float]] = {}
        cache_s, val_losses = [], {}
        for _ in range(bench.repeats):
            for cached in (True, False):
                clock = EpochClock()
                run = phase2_config(cfg, images, work_dir / "phase2", cached)
                result = train_phase(run, "phase2", callbacks=[clock])
                seconds = [e - b for b, e in zip(clock.begins, clock.ends, strict=True)]
                epoch_s[cached].append(steady(seconds))
                for part, per_epoch in clock.parts().items():
                    parts.setdefault((cached, part), []).append(steady(per_epoch))
                if cached:
                    cache_s.append(result.summary["feature_cache_s"])
                val_losses[cached] = read_metrics(result.run_dir / "metrics.csv")[-1]["val_loss"]
    finally:
        keras.config.enable_interactive_logging()
    cached_row = figure("phase2_cached_epoch", "s", epoch_s[True])
    e2e_row = figure("phase2_end_to_end_epoch", "s", epoch_s[False])
    ratio = ratio_figure("speedup", e2e_row, cached_row, goal=PHASE2_GOAL)
    ratio["goal_met"] = ratio["median"] >= PHASE2_GOAL
    flops = prefix_flops(cfg)
    return {
        "benchmark": "phase2_cached",
        "backbone": cfg.model.backbone,
        "images": bench.phase2_images,
        "image_size": bench.phase2_image_size,
        "batch_size": cfg.train.batch_size,
        "epochs": bench.phase2_epochs,
        **flops,
        "cache_s": figure("phase2_cache", "s", cache_s),
        "val_loss_gap": abs(val_losses[True] - val_losses[False]),
        "figures": [cached_row, e2e_row, ratio],
        # Per arm: the epoch's training steps, validation and end (checkpoint commit).
        "epoch_split": [
            figure(f"phase2_{'cached' if arm else 'end_to_end'}_epoch_{part}", "s", seconds)
            for (arm, part), seconds in parts.items()
        ],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
