"""make export and loading saved models: checked in fresh processes, as a user meets them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transferlab.cli import main
from transferlab.data import read_image, resize_pixels
from transferlab.data.images import draft_scale
from transferlab.evaluation import export_model
from transferlab.evaluation.calibration import save_calibration
from transferlab.evaluation.export import decode_encoded, resize_images
from transferlab.experiments.stats import apply_temperature
from transferlab.models import build_model
from transferlab.runs import best_model_path, write_json
from transferlab.training.optim import compile_model, make_optimizer

from .conftest import ROOT, demo_config
from .test_side_layers import SIDE_DATA, STATS


def small_cfg(root: Path, **overrides):
    """The demo config with small_resnet at 16 px, everything under ``root``."""
    return demo_config(
        root, {"model.backbone": "small_resnet", "model.image_size": 16, **overrides}
    )


def side_cfg(root: Path, mode: str, **overrides):
    """A fusion or ROI model's config: two metadata columns, up to three boxes."""
    return small_cfg(
        root,
        **{"experiment": f"side_{mode}", **SIDE_DATA, "model.inputs": mode, **overrides},
    )


def side_batch(count: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = np.zeros((count, 3, 4), np.float32)
    boxes[:, 0] = [0.25, 0.25, 0.5, 0.5]
    mask = np.zeros((count, 3), np.float32)
    mask[:, 0] = 1
    return {
        "image": rng.integers(0, 256, (count, size, size, 3)).astype(np.uint8),
        "metadata": rng.normal(50, 10, (count, 2)).astype(np.float32),
        "boxes": boxes,
        "box_mask": mask,
    }


def model_inputs(model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of ``batch`` that ``model`` takes, by input name."""
    return {t.name: batch[t.name] for t in model.inputs}


def keras_inputs(batch: dict[str, np.ndarray]):
    """What ``model.predict`` takes: the images alone, or the dict of named inputs."""
    return batch["image"] if list(batch) == ["image"] else batch


def save_best(cfg, model, class_names: list[str] | None = None) -> Path:
    """Save ``model`` as the experiment's phase 1 best, with the run's class names."""
    path = best_model_path(cfg, "phase1")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    if class_names:
        summary = {"model_path": str(path), "class_names": class_names}
        write_json(Path(cfg.output_dir) / "runs" / "1_train_phase1" / "summary.json", summary)
    return path


def run_fresh(code: str, tmp_path: Path) -> None:
    """Run ``code`` in a new Python process; fail with its stderr if it fails."""
    script = tmp_path / "fresh.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


# --- make export --------------------------------------------------------------------------

SERVE = """
import sys
import numpy as np
import tensorflow as tf

served = {}
for name in ["image", "fusion"]:
    signature = tf.saved_model.load(f"{name}_savedmodel").signatures["serving_default"]
    batches = {}
    for stored, array in np.load(f"{name}_inputs.npz").items():
        batch, input_name = stored.split("/")
        batches.setdefault(batch, {})[input_name] = array
    for batch, inputs in batches.items():
        out = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        served[f"{name}/{batch}/probabilities"] = out["probabilities"].numpy()
        served[f"{name}/{batch}/class_name"] = out["class_name"].numpy().astype(str)
# The same larger images sent as PNG files' bytes: decoded and resized inside.
encoded = tf.saved_model.load("image_savedmodel").signatures["serve_encoded"]
larger = np.load("image_inputs.npz")["larger/image"]
files = tf.stack([tf.io.encode_png(image) for image in larger])
served["image/encoded/probabilities"] = encoded(image_bytes=files)["probabilities"].numpy()
np.savez("served.npz", **served)
assert "transferlab" not in sys.modules
"""


def test_exported_models_serve_uint8_images_in_a_process_without_transferlab(tmp_path):
    models = {
        "image": (small_cfg(tmp_path / "image"), None, ["zero", "one", "two"]),
        # Fusion takes every named input there is: metadata, boxes and box_mask.
        "fusion": (side_cfg(tmp_path / "fusion", "fusion"), STATS, None),
    }
    expected = {}
    # The fusion model has a temperature fitted to it (make evaluate, eval.calibrate=true).
    temperatures = {"image": None, "fusion": 2.0}
    for name, (cfg, stats, class_names) in models.items():
        model = build_model(cfg, num_classes=3, input_size=12, metadata_stats=stats)
        source = save_best(cfg, model, class_names)
        temperature = temperatures[name]
        if temperature:
            save_calibration(source, temperature, fitted_on="val")
        result = export_model(cfg)
        assert result.source == source and result.temperature == temperature
        if name == "image":
            # A second export replaces the first whole and leaves nothing beside it.
            (result.path / "stale.txt").write_text("from the earlier export")
            result = export_model(cfg)
            assert not (result.path / "stale.txt").exists()
            assert sorted(p.name for p in result.path.parent.iterdir()) == [
                "demo_phase1_best.keras",
                "demo_savedmodel",
            ]
        result.path.rename(tmp_path / f"{name}_savedmodel")
        at_size = model_inputs(model, side_batch(5, 12, seed=1))
        larger = model_inputs(model, side_batch(5, 30, seed=2))
        np.savez(
            tmp_path / f"{name}_inputs.npz",
            **{f"at_size/{k}": v for k, v in at_size.items()},
            **{f"larger/{k}": v for k, v in larger.items()},
        )
        resized = {**larger, "image": resize_images(larger["image"], 12).numpy()}
        for batch, inputs in {"at_size": at_size, "larger": resized}.items():
            probabilities = model.predict(keras_inputs(inputs), verbose=0)
            if temperature:
                probabilities = apply_temperature(probabilities, temperature)
            expected[f"{name}/{batch}"] = probabilities
        record = json.loads((result.run_dir / "export.json").read_text())
        assert record["temperature"] == temperature
        assert record["inputs"]["image"] == {"shape": [None, None, None, 3], "dtype": "uint8"}
        assert set(record["inputs"]) == {"image"} | set(at_size)

    run_fresh(SERVE, tmp_path)
    served = np.load(tmp_path / "served.npz")
    for key, probabilities in expected.items():
        np.testing.assert_allclose(served[f"{key}/probabilities"], probabilities, atol=1e-6)
    np.testing.assert_allclose(
        served["image/encoded/probabilities"], expected["image/larger"], atol=1e-6
    )
    names = served["image/at_size/class_name"]
    top = expected["image/at_size"].argmax(axis=1)
    assert list(names) == [["zero", "one", "two"][i] for i in top]
    assert set(served["fusion/at_size/class_name"]) <= {"class_0", "class_1", "class_2"}


@pytest.mark.parametrize(
    "shape", [(40, 40), (24, 30), (13, 13), (100, 64), (8, 8), (16, 16), (27, 48), (48, 12)]
)
def test_the_served_resize_is_the_readers_to_one_grey_level(shape):
    # Each axis shrunk to half or less (40, 100, 48) averages areas, milder ones are bilinear.
    pixels = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    served = resize_images(pixels[None], 16).numpy()[0]
    difference = np.abs(served - resize_pixels(pixels, 16).astype(np.float32))
    assert difference.max() <= 1
    assert difference.mean() < 0.2


@pytest.mark.parametrize("width, height", [(4000, 3000), (1920, 1080)])
def test_the_exports_jpeg_decode_is_the_readers(tmp_path, width, height):
    # A photo-like JPEG (smooth noise) as a phone or camera writes it; the reader decodes
    # it at a reduced draft scale (1/8 and 1/4 here), the export must decode it alike.
    rng = np.random.default_rng(width)
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(path, quality=90)
    assert draft_scale(width, height, 224) == (8 if width == 4000 else 4)
    served = decode_encoded(tf.constant(path.read_bytes()), 224).numpy()
    read = read_image(path, 224)
    assert served.shape == read.shape == (224, 224, 3)
    assert np.abs(served.astype(int) - read).max() <= 1


def test_export_without_a_trained_model_says_to_train_first(tmp_path, capsys):
    code = main(
        [
            "export",
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--set",
            f"models_dir={tmp_path / 'models'} output_dir={tmp_path / 'outputs'}",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no best model of experiment 'demo'" in err
    assert "make train-phase1" in err


# --- keras.models.load_model after `import transferlab` alone --------------------------

LOAD = """
{imports}
import numpy as np

inputs = np.load("inputs.npz")
for name in ["fusion", "crop", "mask"]:
    model = keras.models.load_model(f"{{name}}.keras")  # compiled, in safe mode
    batch = {{k.split("/")[1]: v for k, v in inputs.items() if k.startswith(name + "/")}}
    np.save(f"{{name}}_loaded.npy", model.predict(batch, verbose=0))
schedule = keras.models.load_model("fusion.keras").optimizer.get_config()["learning_rate"]
assert schedule["class_name"] == "OneCycle", schedule
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> tuple[Path, dict]:
    """Models that name every object transferlab registers, saved, with their predictions.

    All three have small_resnet's StochasticDepth and the Preprocess layer; fusion adds
    NormalizeMetadata and is compiled with the OneCycle schedule; the ROI models add
    CropToBox and MaskOutsideBoxes.
    """
    folder = tmp_path_factory.mktemp("saved")
    fusion = side_cfg(
        folder, "fusion", **{"phase1.schedule": "onecycle", "model.augmentation": ["contrast"]}
    )
    configs = {
        "fusion": (fusion, STATS),
        "crop": (side_cfg(folder, "roi", **{"model.roi": "largest"}), None),
        "mask": (side_cfg(folder, "roi", **{"model.roi": "mask"}), None),
    }
    inputs, expected = {}, {}
    for name, (cfg, stats) in configs.items():
        model = build_model(cfg, num_classes=3, input_size=12, metadata_stats=stats)
        if name == "fusion":
            compile_model(model, cfg, make_optimizer(cfg.phase1, None, steps_per_epoch=10))
        model.save(folder / f"{name}.keras")
        batch = model_inputs(model, side_batch(4, 12))
        inputs.update({f"{name}/{k}": v for k, v in batch.items()})
        expected[name] = model.predict(batch, verbose=0)
    np.savez(folder / "inputs.npz", **inputs)
    return folder, expected


@pytest.mark.parametrize(
    "imports",
    [
        "import transferlab, keras",
        # Keras already loaded: registered at once (the short branch; slow suite only).
        pytest.param("import keras, transferlab", marks=pytest.mark.slow),
    ],
)
def test_keras_load_model_reads_every_saved_model_after_import_transferlab(saved_models, imports):
    folder, expected = saved_models
    run_fresh(LOAD.format(imports=imports), folder)
    for name, probabilities in expected.items():
        np.testing.assert_allclose(np.load(folder / f"{name}_loaded.npy"), probabilities)


def test_the_exports_jpeg_decode_turns_photos_upright_as_the_reader_does(tmp_path):
    coarse = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((40, 24), Image.BILINEAR)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif.endian = "<" if orientation % 2 else ">"  # both byte orders cameras write
        path = tmp_path / f"turned_{orientation}.jpg"
        picture.save(path, quality=95, exif=exif)
        served = decode_encoded(tf.constant(path.read_bytes()), 16).numpy()
        assert np.abs(served.astype(int) - read_image(path, 16)).max() <= 1, orientation
