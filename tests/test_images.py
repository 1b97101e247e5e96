"""The one image reader: every mode a photo folder holds, and the same pixels in every stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.config import load_config
from transferlab.data import DataError, load_dataset, prepare_splits, read_image
from transferlab.data.images import image_size, resize_pixels

from .tiny_model import build_tiny_model

# A few flat colours, so palette and 1-bit files hold the picture exactly.
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [240, 240, 240]], np.uint8)


def blocks(height: int, width: int, seed: int) -> np.ndarray:
    """A picture of flat colour blocks (4 x 4 pixels each)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(COLOURS), size=(-(-height // 4), -(-width // 4)))
    return COLOURS[np.kron(cells, np.ones((4, 4), dtype=int))[:height, :width]]


def write_kind(path: Path, kind: str, seed: int) -> np.ndarray:
    """Write one image of ``kind``; return the RGB pixels a viewer would show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = blocks(24, 32, seed)
    image = Image.fromarray(rgb)
    if kind == "rgb_jpeg":
        image.save(path, quality=95, subsampling=0)
    elif kind == "grey_jpeg":
        image = image.convert("L")
        image.save(path, quality=95, subsampling=0)
        return np.repeat(np.asarray(image)[..., None], 3, axis=-1)
    elif kind == "cmyk_jpeg":
        image.convert("CMYK").save(path, quality=95, subsampling=0)
    elif kind == "rgba_png":
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
        Image.fromarray(rgba).save(path)
    elif kind == "palette_png":
        image.quantize(colors=4).save(path, transparency=0)
    elif kind in ("palette_bmp", "onebit_bmp"):
        if kind == "onebit_bmp":
            rgb = np.where(rgb.mean(axis=-1, keepdims=True) > 100, 255, 0).astype(np.uint8)
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
            Image.fromarray(rgb[..., 0]).convert("1").save(path)
        else:
            image.quantize(colors=4).save(path)
    elif kind == "grey16_png":
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257
        Image.fromarray(grey).save(path)
        return np.repeat(np.asarray(image.convert("L"))[..., None], 3, axis=-1)
    elif kind == "exif_rotated_jpeg":
        # Stored turned on its side, with orientation 6 ("rotate 90° clockwise to view").
        stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(path, quality=95, subsampling=0, exif=exif)
    return rgb


KINDS = {
    "rgb_jpeg": ".jpg",
    "grey_jpeg": ".jpg",
    "cmyk_jpeg": ".jpg",
    "rgba_png": ".png",
    "palette_png": ".png",
    "palette_bmp": ".bmp",
    "onebit_bmp": ".bmp",
    "grey16_png": ".png",
    "exif_rotated_jpeg": ".jpg",
}
LOSSLESS = {"rgba_png", "palette_png", "palette_bmp", "onebit_bmp", "grey16_png"}


@pytest.mark.parametrize("kind", KINDS)
def test_reader_shows_each_kind_as_a_viewer_does(tmp_path, kind):
    path = tmp_path / f"{kind}{KINDS[kind]}"
    shown = write_kind(path, kind, seed=1)
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == shown.shape == (24, 32, 3)
    error = np.abs(pixels.astype(int) - shown.astype(int))
    if kind in LOSSLESS:
        assert error.max() == 0, kind
    else:
        assert error.mean() < 4, kind  # JPEG's own loss, not a misread (that is ~100)
    assert image_size(path) == (32, 24)  # (width, height) as shown, EXIF applied


def test_reader_resizes_with_one_filter_for_files_and_arrays(tmp_path):
    path = tmp_path / "a.png"
    shown = write_kind(path, "rgba_png", seed=2)
    assert np.array_equal(read_image(path, 16), resize_pixels(shown, 16))
    assert read_image(path, 16).shape == (16, 16, 3)


def test_reader_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(DataError, match=r"none\.png does not exist"):
        read_image(tmp_path / "none.png")
    truncated = tmp_path / "cut.jpg"
    write_kind(truncated, "rgb_jpeg", seed=3)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.jpg"):
        read_image(truncated, 16)


@pytest.fixture
def every_kind_folder(tmp_path) -> Path:
    """Two classes, each holding one file of every kind (and two plain JPEGs)."""
    root = tmp_path / "kinds"
    for label, name in enumerate(("a", "b")):
        for i, (kind, suffix) in enumerate(KINDS.items()):
            write_kind(root / name / f"{kind}{suffix}", kind, seed=10 * i + label)
        for i in range(2):
            write_kind(root / name / f"extra{i}.jpg", "rgb_jpeg", seed=100 + 10 * label + i)
    return root


def test_every_stage_feeds_the_model_the_same_pixels(cfg, every_kind_folder, monkeypatch):
    """Training's validation pass, evaluate, predict and Grad-CAM: bit for bit the same."""
    import transferlab.evaluation.gradcam as gradcam
    from transferlab.data.pipeline import make_tf_dataset
    from transferlab.evaluation import evaluate, predict, run_gradcam
    from transferlab.evaluation.inference import split_batches
    from transferlab.training.phase import make_data

    folder_cfg = load_config(
        None,
        {
            "output_dir": cfg.output_dir,
            "models_dir": cfg.models_dir,
            "experiment": "kinds",
            "data.kind": "folder",
            "data.data_dir": str(every_kind_folder),
            "data.splits": [0.4, 0.3, 0.3],
            "data.input_size": 20,
            "train.batch_size": 4,
            "eval.split": "val",
            "eval.gradcam_images": 8,
            "eval.gradcam_layer": "conv_last",
        },
    )
    dataset = load_dataset(folder_cfg)
    assert dataset.skipped == []  # every kind is readable, 1-bit BMP included
    val = prepare_splits(folder_cfg, dataset).val
    model_path = Path(folder_cfg.models_dir) / "kinds_phase1_best.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(2, input_size=20, image_size=16)
    model.save(model_path)

    def images_of(batches):
        return np.concatenate([x.numpy() for x, _ in batches])

    splits = prepare_splits(folder_cfg, dataset)
    training = make_data(folder_cfg, dataset, splits, 20, None, 2, epochs=(0, 1))
    seen_in_training = images_of(training.val)
    assert np.array_equal(seen_in_training, images_of(make_tf_dataset(dataset, val, 4, 20)))
    assert np.array_equal(
        seen_in_training, images_of(split_batches(model, folder_cfg, dataset, val))
    )
    from_paths = np.stack(
        [
            read_image(p, 20)
            for p in dataset.table.set_index("sample_id").loc[val["sample_id"], "path"]
        ]
    )
    assert np.array_equal(seen_in_training, from_paths)

    # What Grad-CAM hands the model, per grid, in the order of the grid's rows.
    drawn, real_overlays = [], gradcam.gradcam_overlays

    def record(model, pixels, *args, **kwargs):
        drawn.append(pixels)
        return real_overlays(model, pixels, *args, **kwargs)

    monkeypatch.setattr(gradcam, "gradcam_overlays", record)
    result = evaluate(folder_cfg)
    cam = run_gradcam(folder_cfg)
    assert cam.summary["predictions_from"] == str(result.run_dir)  # no second pass
    predictions = result.predictions.set_index("sample_id")
    right = predictions[predictions["correct"]]
    wrong = predictions[~predictions["correct"]]
    assert len(drawn) == int(len(right) > 0) + int(len(wrong) > 0)
    seen = dict(zip(val["sample_id"], seen_in_training, strict=True))
    pool = {s: seen[s] for s in predictions.index}
    for pixels in drawn:
        for image in pixels:
            assert any(np.array_equal(image, candidate) for candidate in pool.values())

    # predict() on the files reproduces evaluate's probabilities.
    paths = dataset.table.set_index("sample_id").loc[val["sample_id"], "path"].tolist()
    table = predict(model_path, paths, class_names=dataset.class_names)
    probabilities = [f"prob_{c}" for c in dataset.class_names]
    assert np.allclose(
        table[probabilities].to_numpy(), result.predictions[probabilities].to_numpy(), atol=1e-6
    )


def test_reader_averages_areas_along_an_axis_that_shrinks_by_half_or_more():
    # A wide picture of one-pixel stripes: its width shrinks 4x, its height 1.125x. The
    # width is area-averaged (grey), even though the short side shrinks mildly.
    stripes = np.zeros((18, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    resized = resize_pixels(stripes, 16)
    assert np.abs(resized.astype(int) - 128).max() <= 1
    # Turned on its side, the same holds for the height.
    assert np.array_equal(resize_pixels(stripes.transpose(1, 0, 2), 16), resized.transpose(1, 0, 2))
