"""Inference shared by evaluation, TTA, Grad-CAM and ``predict``: which model, which pixels.

Every path here reads pixels through the data package's one reader and streams them
batch by batch, so memory stays flat however large the split or folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from transferlab.config import Config
from transferlab.data import IMAGE_SUFFIXES, DataError, ImageDataset, read_image, resize_pixels
from transferlab.data.pipeline import input_size_for, make_tf_dataset
from transferlab.data.splits import write_skipped
from transferlab.evaluation.calibration import load_temperature
from transferlab.evaluation.metrics import predictions_table
from transferlab.experiments.stats import apply_temperature
from transferlab.models import load_model
from transferlab.models.signature import (
    assemble_inputs,
    fixed_input_size,
    input_size_of,
    side_names_of,
)
from transferlab.progress import PredictProgress, progress_bar
from transferlab.runs import best_model_path, read_json, write_text


def default_model_path(cfg: Config) -> Path:
    """The experiment's best model: phase 2's, else phase 1's.

    Phase 2 writes its best model only when it beats phase 1's best score; one older
    than phase 1's model was fine-tuned from an earlier phase 1 and is passed over.
    """
    phase1, phase2 = best_model_path(cfg, "phase1"), best_model_path(cfg, "phase2")
    if phase2.is_file() and (
        not phase1.is_file() or phase2.stat().st_mtime >= phase1.stat().st_mtime
    ):
        return phase2
    if phase1.is_file():
        return phase1
    raise FileNotFoundError(
        f"no best model of experiment {cfg.experiment!r} in {cfg.models_dir} "
        f"({cfg.model_name}_phase2_best.keras or _phase1_best.keras); run `make train-phase1` first"
    )


def phase_of_model(cfg: Config, model_path: Path) -> str:
    """Which phase's best model ``model_path`` is ("phase1", "phase2"), or "other"."""
    for phase in ("phase2", "phase1"):
        if Path(model_path).resolve() == best_model_path(cfg, phase).resolve():
            return phase
    return "other"


def feed_size(model, cfg: Config, dataset: ImageDataset) -> int:
    """Side of the images fed to ``model``: its input's, else what training fed it."""
    return fixed_input_size(model) or input_size_for(cfg, dataset)


def split_batches(model, cfg: Config, dataset: ImageDataset, table: pd.DataFrame):
    """The split as training's validation pass reads it: same reader, size and batches."""
    size = feed_size(model, cfg, dataset)
    return make_tf_dataset(
        dataset, table, cfg.train.batch_size, size, side_names=side_names_of(model)
    )


def predict_dataset(model, batches: tf.data.Dataset, images: int, description: str) -> np.ndarray:
    """Probabilities (N, classes) for a batched dataset of (inputs, labels), streamed.

    ``images``: how many the dataset holds, for the progress bar.
    """
    watch = PredictProgress(images, description)
    return np.asarray(model.predict(batches, verbose=0, callbacks=[watch]), dtype=np.float32)


# --- new images ------------------------------------------------------------------------


def predict(
    model_path: str | Path,
    images_or_folder,
    class_names: list[str] | None = None,
    output_csv: str | Path | None = None,
    output_dir: str | Path = "outputs",
    batch_size: int = 64,
    side_inputs: dict | None = None,
    calibrate: bool = True,
) -> pd.DataFrame:
    """Labels and probabilities for new images of any size or mode, read batch by batch.

    ``images_or_folder``: a folder (searched recursively), one image path, a list of
    paths, an array (N, H, W[, C]) or a list of arrays. Arrays may be uint8, uint16
    (scaled by 255/65535), bool, or integers or floats holding 0..255; a float array
    within 0..1 is refused (multiply it by 255 first), as is any value outside 0..255.
    Files that cannot be read are left out with a warning (and listed in
    ``<output_csv stem>_skipped.csv``), never fatal.

    Fusion and ROI models also need ``side_inputs``, one row per image:
    ``{"metadata": (N, columns), "boxes": (N, max_boxes, 4) relative x, y, w, h}``
    (``box_mask`` optional). Class names default to those in the summary.json of the
    run that saved the model (searched under ``output_dir``).

    ``calibrate``: apply the temperature that ``make evaluate SET='eval.calibrate=true'``
    saved beside the model (``<model file>.calibration.json``), if it was fitted to this
    very file; a stale one is ignored with a warning. The temperature applied (or None)
    is in ``table.attrs["temperature"]``.
    """
    model = load_model(model_path)
    size = input_size_of(model)
    names, items = list_sources(images_or_folder)
    kept, parts, skipped = [], [], []
    bar = progress_bar(len(items), "predict")
    for start in range(0, len(items), batch_size):
        bar.update(min(batch_size, len(items) - start))
        batch_names, pixels = [], []
        for index in range(start, min(start + batch_size, len(items))):
            try:
                pixels.append(pixels_of(items[index], size, names[index]))
            except DataError as err:
                if isinstance(items[index], np.ndarray):
                    raise  # arrays come from code: say what is wrong with them at once
                skipped.append({"path": names[index], "reason": str(err)})
                continue
            batch_names.append(index)
        if not pixels:
            continue
        side = None
        if side_inputs:
            side = {k: np.asarray(v)[batch_names] for k, v in side_inputs.items()}
        inputs = assemble_inputs(model, np.stack(pixels), side)
        parts.append(np.asarray(model.predict_on_batch(inputs), dtype=np.float32))
        kept += batch_names
    bar.close()
    if skipped:
        warnings.warn(
            f"{len(skipped)} image(s) could not be read and were left out, e.g. "
            f"{skipped[0]['reason']}",
            stacklevel=2,
        )
    if not parts:
        raise DataError(f"none of the {len(items)} image(s) could be read; see the warning")
    probabilities = np.concatenate(parts)
    temperature = load_temperature(model_path) if calibrate else None
    if temperature is not None:
        probabilities = apply_temperature(probabilities, temperature)
    num_classes = probabilities.shape[1]
    class_names = class_names or class_names_for(model_path, output_dir, num_classes)
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names given for a model with {num_classes} outputs"
        )
    table = predictions_table([names[i] for i in kept], None, probabilities, class_names)
    table.attrs["skipped"] = skipped
    table.attrs["temperature"] = temperature
    if output_csv:
        write_text(output_csv, table.to_csv(index=False))
        write_skipped(Path(output_csv).with_name(Path(output_csv).stem + "_skipped.csv"), skipped)
    return table


def list_sources(source) -> tuple[list[str], list]:
    """(names, items): file paths or arrays, one per image, not yet read."""
    if isinstance(source, np.ndarray):
        if source.ndim == 2 or (source.ndim == 3 and source.shape[-1] in (1, 3, 4)):
            source = [source]  # one image
        else:
            source = list(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            source = files
        else:
            source = [path]
    items = list(source)
    names = [
        f"image_{i}" if isinstance(item, np.ndarray) else str(item) for i, item in enumerate(items)
    ]
    return names, items


def pixels_of(item, size: int | None, name: str) -> np.ndarray:
    """uint8 RGB pixels of a file path or an array, resized to ``size`` by the one reader."""
    if isinstance(item, np.ndarray):
        pixels = as_uint8_rgb(item, name)
        return resize_pixels(pixels, size) if size else pixels
    return read_image(item, size)


def as_uint8_rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """An image array as uint8 RGB (H, W, 3); a range that cannot be pixels is an error."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise DataError(
            f"{name} has shape {array.shape}; give (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    array = array[..., :3]
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        # Full 16-bit range onto 0..255, as the reader does for 16-bit files.
        return np.round(array.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{name} has dtype {array.dtype}; give uint8, uint16 or float pixels")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise DataError(
            f"{name} holds values from {low:g} to {high:g}; pixels must lie in 0..255 "
            "(undo any normalization, e.g. mean/std scaling, before predicting)"
        )
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        raise DataError(
            f"{name} is a float array within 0..1; transferlab models take pixels in 0..255. "
            "Multiply it by 255 (image * 255) first"
        )
    return np.round(array).astype(np.uint8)


def class_names_for(model_path: str | Path, output_dir: str | Path, num_classes: int) -> list[str]:
    """Class names recorded by the training run that saved this model, else class_0..."""
    target = Path(model_path).resolve()
    for summary in sorted(Path(output_dir).glob("runs/*/summary.json"), reverse=True):
        data = read_json(summary)
        # Training runs record their class names; evaluate, Grad-CAM and predict runs do not.
        if "class_names" in data and Path(data.get("model_path") or "").resolve() == target:
            return list(data["class_names"])
    return [f"class_{i}" for i in range(num_classes)]
