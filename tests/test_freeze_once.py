"""Freeze once: phase 2 from conv5 trains conv5 and the head on conv4's cached output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ctrl_c_at_epoch, demo_config
from transferlab.models import build_model, unfreeze_from
from transferlab.models.split import find_cut, prefix_model, suffix_model
from transferlab.progress import EpochProgress
from transferlab.training import features as features_module
from transferlab.training import train_phase
from transferlab.training.checkpoints import EpochCheckpoint

# Ten digits per class (70 train, 15 val), small_resnet at 16 px: 5 steps an epoch.
SMALL = {
    "data.subset_per_class": 10,
    "model.backbone": "small_resnet",
    "model.image_size": 16,
    "train.batch_size": 16,
    "train.monitor": "val_accuracy",
    "phase1.epochs": 0,  # phase 2 starts from the built model: all this test needs
    "phase2.epochs": 2,
    "phase2.patience": 0,
    "phase2.unfreeze_from": "conv5",
}


def small_config(root: Path, **overrides):
    return demo_config(root, {**SMALL, **overrides})


def test_the_model_splits_before_its_first_trainable_layer(tmp_path):
    cfg = small_config(tmp_path)
    model = build_model(cfg, num_classes=3, input_size=16)
    assert find_cut(model).layer == "head_pool"  # phase 1: the whole backbone is frozen
    unfreeze_from(model, "conv5", "small_resnet")
    assert find_cut(model).layer == "conv4_block2_out"
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    prefix = prefix_model(model, "conv4_block2_out")
    suffix = suffix_model(model, "conv4_block2_out", [], inference_mode=False)
    # The suffix shares the full model's layers: training it trains the full model.
    assert len(suffix.trainable_weights) == len(model.trainable_weights)
    np.testing.assert_allclose(
        suffix.predict(prefix.predict(images, verbose=0), verbose=0),
        model.predict(images, verbose=0),
        atol=1e-6,
    )
    unfreeze_from(model, "all", "small_resnet")
    cut = find_cut(model)
    assert cut.layer is None and "conv1_conv" in cut.reason


def test_cached_phase2_matches_end_to_end_and_resumes(tmp_path, monkeypatch):
    """Phase 2 from conv5 on conv4's float16 cache (on disk, interrupted and resumed)
    against end to end from the same phase 1 model: the same validation metrics."""
    monkeypatch.setattr(features_module, "memory_budget", lambda: 0)  # force the on-disk cache
    cfg = small_config(tmp_path)
    train_phase(cfg, "phase1")
    with ctrl_c_at_epoch(2):
        interrupted = train_phase(cfg, "phase2")
    assert interrupted.stop_reason == "interrupted" and interrupted.epochs_run == 1
    cached = train_phase(cfg, "phase2")
    summary = cached.summary
    assert summary["feature_cached"] and summary["cached_at"] == "conv4_block2_out"
    assert cached.run_dir == interrupted.run_dir and cached.epochs_run == 2
    cache_file = Path(summary["prefix_cache"])
    assert cache_file.parent == Path(cfg.output_dir) / "cache" / "demo"
    assert np.load(cache_file, mmap_mode="r").dtype == np.float16
    assert summary["steps_per_execution"] == 5  # auto: all 5 steps of an epoch in one call

    end_to_end = train_phase(small_config(tmp_path, **{"train.cache_features": False}), "phase2")
    assert not end_to_end.summary["feature_cached"]
    assert end_to_end.summary["end_to_end_reason"] == "train.cache_features is off"
    assert end_to_end.summary["steps_per_execution"] == 1
    rows = [pd.read_csv(r.run_dir / "metrics.csv") for r in (cached, end_to_end)]
    # The cache rounds conv4's outputs to float16: a relative error of at most 2**-11
    # (about 5e-4) in conv5's inputs, which two epochs carry into the losses at that
    # order (measured: about 1e-4). 2e-3 is four times the rounding bound, and far
    # below what training moves the loss in an epoch (2.47 to 1.74 here).
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(rows[0][column], rows[1][column], rtol=2e-3)
    # 15 validation images: the same predictions, so the same accuracy.
    np.testing.assert_array_equal(rows[0]["val_accuracy"], rows[1]["val_accuracy"])


def test_no_per_batch_python_on_the_default_path():
    """Keras runs batches asynchronously only when no callback hooks a batch end."""
    for callback in (EpochProgress, EpochCheckpoint):
        assert "on_train_batch_end" not in vars(callback)
        assert "on_batch_end" not in vars(callback)


def test_a_changed_phase1_model_invalidates_the_cache_key(tmp_path):
    from transferlab.data import load_dataset, prepare_splits

    cfg = small_config(tmp_path)
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    table = pd.concat([splits.train, splits.val])
    model = unfreeze_from(build_model(cfg, 10, 16), "conv5", "small_resnet")
    prefix = prefix_model(model, "conv4_block2_out")
    key = features_module.cache_key(prefix, "conv4_block2_out", dataset, table, 16)
    assert key == features_module.cache_key(prefix, "conv4_block2_out", dataset, table, 16)
    other_split = pd.concat([splits.val, splits.train])
    assert key != features_module.cache_key(prefix, "conv4_block2_out", dataset, other_split, 16)
    layer = model.get_layer("backbone").get_layer("conv2_block1_1_conv")
    layer.set_weights([w + 1 for w in layer.get_weights()])
    assert key != features_module.cache_key(prefix, "conv4_block2_out", dataset, table, 16)


def bench_config(root: Path):
    return demo_config(
        root,
        {
            "model.backbone": "small_resnet",
            "train.batch_size": 4,
            "bench.repeats": 1,
            "bench.frozen_images": 8,
            "bench.frozen_image_size": 16,
            "bench.phase2_epochs": 2,
            "bench.phase2_images": 8,
            "bench.phase2_image_size": 16,
        },
    )


def test_bench_parts_flops_bare_fit_and_the_report(tmp_path):
    """The pieces of `make bench`'s freeze-once figures, tiny: the FLOP limit from the
    model, a bare model.fit of phase 1's head on the same features, the report lines."""
    from transferlab.benchmarks.freeze_once import prefix_flops
    from transferlab.benchmarks.frozen import bare_head_fit, epoch_split_figures
    from transferlab.benchmarks.pipeline import write_synthetic_folder
    from transferlab.benchmarks.report import epoch_split_lines, phase2_section
    from transferlab.benchmarks.timing import figure, ratio_figure

    cfg = bench_config(tmp_path)
    flops = prefix_flops(cfg)
    assert flops["cut"] == "conv4_block2_out"
    prefix, suffix = flops["prefix_flops"], flops["whole_flops"] - flops["prefix_flops"]
    assert 0 < prefix < flops["whole_flops"]
    assert flops["flop_limit"] == pytest.approx((prefix + 3 * suffix) / (3 * suffix))

    images = write_synthetic_folder(tmp_path / "images", 8, 16, classes=2)
    bare = bare_head_fit(cfg, images, epochs=3)
    assert len(bare) == 3 and all(s > 0 for s in bare)
    parts = {"steps": [0.2], "validation": [0.1], "commit": [0.05]}
    split = epoch_split_figures(parts, [0.1])
    ratio = {r["figure"]: r for r in split}["steps_over_bare_fit"]
    assert ratio["median"] == pytest.approx(2.0) and ratio["goal_met"]
    assert "| 0.2 [0.2-0.2] | 0.1 [0.1-0.1] | 0.05 [0.05-0.05] | 0.1 [0.1-0.1] |" in (
        epoch_split_lines({"epoch_split": split})
    )

    cached, e2e = figure("a", "s", [1.0]), figure("b", "s", [3.0])
    result = {
        **flops,
        "backbone": "small_resnet",
        "images": 8,
        "image_size": 16,
        "batch_size": 4,
        "epochs": 2,
        "cache_s": figure("c", "s", [0.5]),
        "val_loss_gap": 1e-4,
        "figures": [
            cached,
            e2e,
            {**ratio_figure("speedup", e2e, cached, goal=2.0), "goal_met": True},
        ],
        "epoch_split": [
            figure(f"phase2_{arm}_epoch_{part}", "s", [seconds])
            for arm, times in (("cached", (0.6, 0.1, 0.3)), ("end_to_end", (2.0, 0.5, 0.5)))
            for part, seconds in zip(("steps", "validation", "commit"), times, strict=True)
        ],
    }
    text = phase2_section(result)
    assert "| 1 [1-1] | 3 [3-3] | 3 [3-3]x |" in text and f"{flops['flop_limit']:.2f}x" in text
    assert "| cached | 0.6 [0.6-0.6] | 0.1 [0.1-0.1] | 0.3 [0.3-0.3] |" in text
    assert "| end to end | 2 [2-2] | 0.5 [0.5-0.5] | 0.5 [0.5-0.5] |" in text
    assert "| end to end / cached | 3.33 [3.33-3.33]x | 5 [5-5]x | 1.67 [1.67-1.67]x |" in text
    # End-to-end steps 2.0 s against 0.6 s cached: the prefix took 2.33x the cached steps.
    predicted = flops["flop_limit"] - 1
    assert f"here 2.33x the cached steps' time, where the FLOP count predicts {predicted:.2f}x" in (
        text
    )


@pytest.mark.slow
def test_bench_times_phase2_cached_against_end_to_end(tmp_path):
    """`make bench`'s phase 2 benchmark, tiny (the product's train_phase three times)."""
    from transferlab.benchmarks.freeze_once import phase2_cached

    result = phase2_cached(bench_config(tmp_path), tmp_path)
    cached, end_to_end, ratio = result["figures"]
    assert result["cut"] == "conv4_block2_out"
    assert ratio["median"] == pytest.approx(end_to_end["median"] / cached["median"])
    assert result["val_loss_gap"] < 1e-2
    assert result["image_size"] == 16 and result["images"] == 8
    # Each arm's steps, validation and epoch end, each a positive time.
    assert len(result["epoch_split"]) == 6
    assert all(row["min"] > 0 for row in result["epoch_split"])
