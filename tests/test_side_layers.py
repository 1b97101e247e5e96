"""Fusion and ROI models: the side layers, named inputs, safe-mode save and reload."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transferlab.config import load_config
from transferlab.data import ImageDataset, Splits
from transferlab.data.side import SideInputs
from transferlab.models import (
    CropToBox,
    MaskOutsideBoxes,
    NormalizeMetadata,
    build_model,
    load_model,
    side_input_names,
)
from transferlab.training.features import metadata_stats

STATS = {"mean": [50.0, 0.0], "variance": [100.0, 1.0]}


# A CSV dataset with two metadata columns and up to three boxes per image.
SIDE_DATA = {
    "data.kind": "csv",
    "data.data_dir": "labels.csv",
    "data.metadata_columns": ["age", "noise"],
    "data.boxes_column": "boxes",
    "data.max_boxes": 3,
}


def side_cfg(mode: str, **extra):
    overrides = {
        "model.backbone": "small_resnet",
        "model.weights": "none",
        "model.image_size": 16,
        **SIDE_DATA,
        "model.inputs": mode,
        **extra,
    }
    return load_config(None, overrides)


def batch(count: int = 4, size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = np.zeros((count, 3, 4), np.float32)
    boxes[:, 0] = [0.25, 0.25, 0.5, 0.5]
    boxes[:, 1] = [0.0, 0.0, 0.25, 0.25]
    mask = np.array([[1, 1, 0]] * count, np.float32)
    mask[-1] = 0  # one image without boxes
    return {
        "image": rng.integers(0, 256, (count, size, size, 3)).astype(np.uint8),
        "metadata": rng.normal(50, 10, (count, 2)).astype(np.float32),
        "boxes": boxes,
        "box_mask": mask,
    }


def test_normalize_metadata_fills_missing_with_the_mean():
    layer = NormalizeMetadata(**STATS, columns=["age", "noise"])
    out = np.asarray(layer(np.array([[60.0, np.nan], [50.0, 2.0]], np.float32)))
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 2.0]])


def test_a_constant_column_is_only_centred():
    # Variance 0 (one value in training): scale 1, so another value stays in range.
    layer = NormalizeMetadata([5.0], [0.0], columns=["site"])
    out = np.asarray(layer(np.array([[5.0], [7.0]], np.float32)))
    np.testing.assert_allclose(out, [[0.0], [2.0]])


def test_metadata_stats_report_a_constant_column():
    cfg = side_cfg("fusion", **{"data.metadata_columns": ["age", "site"]})
    ages = [30.0, np.nan, 50.0, 70.0, 40.0]
    side = SideInputs(["age", "site"], np.array([[a, 3.0] for a in ages], np.float32))
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(5)], "label": 0})
    dataset = ImageDataset("t", ["a"], table, side=side)
    splits = Splits(table[:4], table[4:], table[4:], directory=None)
    with pytest.warns(UserWarning, match=r"column\(s\) 'site' \(always 3\) hold one value"):
        stats = metadata_stats(cfg, dataset, splits)
    np.testing.assert_allclose(stats["mean"], [50.0, 3.0])
    np.testing.assert_allclose(stats["variance"], [800 / 3, 1.0], rtol=1e-6)


def test_crop_to_box_takes_the_box_and_keeps_images_without_one():
    image = np.zeros((2, 16, 16, 3), np.float32)
    image[:, 4:12, 4:12] = 200.0  # the largest box's content
    image[:, 0:4, 0:4, 0] = 99.0  # a small box elsewhere
    data = batch(2)
    data["box_mask"][1] = 0
    largest = np.asarray(CropToBox("largest", margin=0.0)([image, data["boxes"], data["box_mask"]]))
    # Bilinear, half-pixel aligned: only the outermost output pixels blend in the border.
    np.testing.assert_allclose(largest[0, 1:-1, 1:-1], 200.0, atol=1e-3)
    np.testing.assert_allclose(largest[1], image[1], atol=1e-3)  # no box: the whole image
    second = np.asarray(CropToBox("index", 1, 0.0)([image, data["boxes"], data["box_mask"]]))
    np.testing.assert_allclose(second[0, 2:-2, 2:-2, 0], 99.0, atol=1e-3)


def test_mask_outside_boxes_blanks_only_outside():
    image = np.full((2, 16, 16, 3), 100.0, np.float32)
    data = batch(2)
    data["box_mask"][1] = 0
    out = np.asarray(MaskOutsideBoxes(0.0)([image, data["boxes"], data["box_mask"]]))
    assert out[0, 8, 8, 0] == 100 and out[0, 2, 2, 0] == 100 and out[0, 14, 14, 0] == 0
    assert (out[1] == 100).all()
    assert MaskOutsideBoxes.from_config(MaskOutsideBoxes(0.2).get_config()).margin == 0.2


def test_side_input_names_follow_the_config():
    assert side_input_names(side_cfg("fusion", **{"data.boxes_column": None})) == ["metadata"]
    assert side_input_names(side_cfg("roi", **{"model.roi": "mask"})) == ["boxes", "box_mask"]
    assert side_input_names(side_cfg("image")) == []


@pytest.mark.parametrize(
    ("mode", "extra", "names"),
    [
        ("fusion", {}, ["metadata", "boxes", "box_mask"]),
        ("roi", {}, ["boxes", "box_mask"]),
    ],
)
def test_safe_mode_reload_predicts_identically(tmp_path, mode, extra, names):
    cfg = side_cfg(mode, **extra)
    assert side_input_names(cfg) == names
    model = build_model(cfg, 2, 16, STATS)
    data = {k: v for k, v in batch().items() if k in ["image", *names]}
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = load_model(path)  # safe_mode=True
    np.testing.assert_array_equal(model.predict(data, verbose=0), reloaded.predict(data, verbose=0))
    if mode == "fusion" and "metadata" in names:
        assert reloaded.get_layer("meta_norm").columns == ["age", "noise"]


def test_image_only_model_is_unchanged():
    model = build_model(side_cfg("image"), 2, 16)
    assert [t.name for t in model.inputs] == ["image"]
    assert "fusion_concat" not in [layer.name for layer in model.layers]
