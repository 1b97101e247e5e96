"""Grad-CAM on saved models with a nested backbone and a resize layer in front."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from transferlab.evaluation.gradcam import (
    DISPLAY_MIN,
    heatmap_peak,
    make_gradcam_heatmap,
    overlay_heatmap,
    run_gradcam,
)
from transferlab.models import load_model

from .tiny_model import build_tiny_model, patch_images


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory):
    """A tiny model trained to tell a red from a green patch, saved and reloaded.

    Inputs are 24x24 and the model resizes them to 32: the heatmap must map back.
    """
    images, labels, _ = patch_images(400, size=24, patch=6, seed=0)
    model = build_tiny_model(2, input_size=24, image_size=32)
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "patch.keras"
    model.save(path)
    return load_model(path)


def test_heatmap_peak_falls_inside_the_patch(patch_model):
    images, labels, corners = patch_images(40, size=24, patch=6, seed=1)
    assert (patch_model.predict(images, verbose=0).argmax(axis=1) == labels).mean() > 0.9
    heatmaps = make_gradcam_heatmap(images, patch_model, "conv_last")
    assert heatmaps.shape == (40, 16, 16)
    assert heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
    hits = 0
    for heatmap, (row, col) in zip(heatmaps, corners, strict=True):
        peak_row, peak_col = heatmap_peak(heatmap, 24, 24)  # back on the 24x24 input
        hits += row - 1 <= peak_row <= row + 6 and col - 1 <= peak_col <= col + 6
    assert hits >= 32, f"peak inside the patch for {hits}/40 images"


def test_class_index_and_overlay(patch_model):
    images, _, _ = patch_images(3, size=24, patch=6, seed=2)
    one = make_gradcam_heatmap(images, patch_model, "conv_last", class_index=1)
    per_image = make_gradcam_heatmap(images, patch_model, "conv_last", class_index=[1, 1, 1])
    assert np.allclose(one, per_image)
    big = np.zeros((50, 70, 3), dtype=np.uint8)
    overlay = overlay_heatmap(big, one[0])
    assert overlay.shape == (50, 70, 3) and overlay.dtype == np.uint8 and overlay.any()


def test_unknown_layer_names_the_nearest(patch_model):
    with pytest.raises(
        ValueError, match="'conv_lst' is not in the model's backbone; did you mean 'conv_last'"
    ):
        make_gradcam_heatmap(np.zeros((1, 24, 24, 3)), patch_model, "conv_lst")


def test_run_gradcam_writes_run_dir(cfg, tmp_path):
    from .conftest import write_image

    path = tmp_path / "models" / "demo_phase2_best.keras"
    path.parent.mkdir(parents=True)
    build_tiny_model(10, input_size=8, image_size=16).save(path)
    named = write_image(tmp_path / "mine" / "x.png", np.full((30, 40, 3), 200, dtype=np.uint8))
    cfg.eval.gradcam_images = 4
    result = run_gradcam(cfg, images=[named], layer_name="conv_last")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert result.run_dir.name.endswith("_demo_gradcam")
    assert json.loads((result.run_dir / "config.json").read_text()) == cfg.to_dict()
    assert summary["layer_name"] == "conv_last" and summary["model_path"] == str(path)
    assert sorted(summary["figures"]) == [
        "figures/gradcam_correct.png",
        "figures/gradcam_mistakes.png",
        "figures/gradcam_named.png",
    ]
    for figure in result.figures:
        assert figure.stat().st_size > 2000
    # Ten classes, one pair each, three pairs to a row: a page, not a scroll (the old
    # grid was 1156 x 6381 px for the demo).
    width, height = Image.open(result.run_dir / "figures" / "gradcam_correct.png").size
    assert 800 < width < 1600 and height < 1200, (width, height)


def test_overlays_are_drawn_large_and_smooth():
    # An 8 x 8 digit and a 2 x 2 heatmap: at its own size the overlay is four blocks.
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3)).astype(np.uint8)
    heatmap = np.array([[0.0, 1.0], [0.5, 0.2]], dtype=np.float32)
    assert overlay_heatmap(image, heatmap).shape == (8, 8, 3)
    shown = overlay_heatmap(np.zeros_like(image), heatmap, size=DISPLAY_MIN)
    assert shown.shape == (DISPLAY_MIN, DISPLAY_MIN, 3)
    # On a black image the overlay is the heatmap's colour alone: a smooth ramp, not blocks.
    assert len(np.unique(shown[:, DISPLAY_MIN // 2, :], axis=0)) > 40
    wide = overlay_heatmap(np.zeros((30, 60, 3), np.uint8), heatmap, size=DISPLAY_MIN)
    assert wide.shape == (DISPLAY_MIN // 2, DISPLAY_MIN, 3)  # the aspect is kept


def test_run_gradcam_missing_model(cfg):
    with pytest.raises(FileNotFoundError, match="no best model"):
        run_gradcam(cfg)


def test_resnet50_from_build_model(cfg):
    """The real model: ResNet50 (random init) at 32 px behind a resize layer, saved and reloaded."""
    from transferlab.evaluation import evaluate
    from transferlab.evaluation.gradcam import default_layer_name

    build_model = pytest.importorskip("transferlab.models").build_model

    path = Path(cfg.models_dir) / "demo_phase1_best.keras"
    path.parent.mkdir(parents=True)
    build_model(cfg, num_classes=10, input_size=8).save(path)
    reloaded = load_model(path)
    assert default_layer_name(reloaded, "resnet50") == "conv5_block3_out"
    images = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype("uint8")
    heatmaps = make_gradcam_heatmap(images, reloaded, "conv5_block3_out")
    assert heatmaps.shape == (2, 1, 1)  # 32 px / stride 32
    heatmaps = make_gradcam_heatmap(images, reloaded, "conv4_block6_out")
    assert heatmaps.shape == (2, 2, 2)
    with pytest.raises(ValueError, match="did you mean 'conv5_block3_out'"):
        make_gradcam_heatmap(images, reloaded, "conv5_block3_outt")
    cfg.eval.gradcam_images = 2
    result = run_gradcam(cfg)
    assert result.layer_name == "conv5_block3_out" and len(result.figures) == 2
    assert evaluate(cfg).metrics["num_samples"] > 200
