"""Evaluate a saved model on a split, and predict labels for new images.

``evaluate(cfg)`` writes ``outputs/runs/<ts>_<experiment>_evaluate/`` with
predictions.csv, metrics.json and figures/; every metric is scikit-learn's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from transferlab.config import Config
from transferlab.data import IMAGE_SUFFIXES, DataError, load_dataset, read_image, resize_image
from transferlab.inputs import assemble_inputs, image_shape_of, side_names_of
from transferlab.models import load_model
from transferlab.plots import plot_confusion_matrix, plot_image_grid, plot_roc_curves, short
from transferlab.runs import best_model_path, new_run_dir, read_json, write_json, write_text

# How many images the prediction grid and the mistakes gallery show.
GRID_IMAGES = 16


@dataclass
class EvalResult:
    run_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    figures: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        m = self.metrics
        return (
            f"{m['split']} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
            f"on {m['num_samples']} images; {self.run_dir}"
        )


# --- models --------------------------------------------------------------------


def default_model_path(cfg: Config) -> Path:
    """The best model of the latest phase: phase 2 if it was trained, else phase 1."""
    for phase in ("phase2", "phase1"):
        path = best_model_path(cfg, phase)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no best model of experiment {cfg.experiment!r} in {cfg.models_dir} "
        f"({cfg.model_name}_phase2_best.keras or _phase1_best.keras); run `make train-phase1` first"
    )


def model_input_size(model) -> int | None:
    """Side the model's input expects, or None when it takes any size."""
    height = image_shape_of(model)[1]
    return int(height) if height else None


def split_inputs(model, dataset, table: pd.DataFrame, images: np.ndarray):
    """The model's inputs for a split: the images, plus the dataset's metadata and boxes."""
    side = {}
    if side_names_of(model):
        if dataset.side is None:
            raise DataError(
                f"the model takes {side_names_of(model)} besides the image, but the dataset "
                "has no metadata or boxes; set data.metadata_columns / data.boxes_column"
            )
        side = dataset.side.arrays(dataset.rows(table["sample_id"]))
    return assemble_inputs(model, images, side)


# --- metrics -------------------------------------------------------------------


def compute_metrics(
    y_true, probabilities: np.ndarray, class_names: list[str], top_k: int = 5
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, averaged and per-class P/R/F1, top-k, ROC AUC, confusions."""
    y_true = np.asarray(y_true)
    n = len(class_names)
    labels = list(range(n))
    y_pred = probabilities.argmax(axis=1)
    result: dict[str, Any] = {
        "num_samples": int(len(y_true)),
        "num_classes": n,
        "class_names": list(class_names),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        result.update(
            {
                f"{average}_precision": float(p),
                f"{average}_recall": float(r),
                f"{average}_f1": float(f),
            }
        )
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    result["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(class_names)
    }
    if n > 2:
        k = min(top_k, n - 1)
        result["top_k"] = k
        result["top_k_accuracy"] = float(
            skm.top_k_accuracy_score(y_true, probabilities, k=k, labels=labels)
        )
    result["roc_auc"] = roc_auc(y_true, probabilities, n)
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    result["confusion_matrix"] = matrix.tolist()
    result["most_confused"] = most_confused(matrix, class_names)
    ranked = sorted(class_names, key=lambda c: (result["per_class"][c]["f1"], c))
    result["weakest_classes"] = ranked[:3]
    result["strongest_classes"] = ranked[::-1][:3]
    return result


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, n: int) -> float | None:
    """Binary AUC, or macro one-vs-rest AUC; None when a class is missing from the split."""
    if len(np.unique(y_true)) < n:
        return None
    if n == 2:
        return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
    return float(
        skm.roc_auc_score(
            y_true, probabilities, multi_class="ovr", average="macro", labels=list(range(n))
        )
    )


def most_confused(matrix: np.ndarray, class_names: list[str], top: int = 5) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = [
        (int(off[t, p]), class_names[t], class_names[p])
        for t, p in zip(*np.nonzero(off), strict=True)
    ]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [{"true": t, "predicted": p, "count": c} for c, t, p in pairs[:top]]


# --- prediction ------------------------------------------------------------------


def predict_batches(model, images, batch_size: int = 64) -> np.ndarray:
    """Probabilities for images, or for a dict of named inputs (fusion and ROI models)."""
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)


def tta_probabilities(model, inputs, passes: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """Mean probabilities over the plain images and ``passes`` flipped/shifted copies.

    With named inputs only the image changes; metadata and boxes stay as they are.
    """
    import keras

    augment = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
        ]
    )
    images = inputs["image"] if isinstance(inputs, dict) else inputs
    total = predict_batches(model, inputs, batch_size)
    for _ in range(passes):
        shifted = keras.ops.convert_to_numpy(augment(images.astype("float32"), training=True))
        shifted = np.clip(np.round(shifted), 0, 255).astype(images.dtype)
        batch = {**inputs, "image": shifted} if isinstance(inputs, dict) else shifted
        total += predict_batches(model, batch, batch_size)
    return total / (passes + 1)


def predictions_table(
    sample_ids, y_true, probabilities: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """One row per image: ids, true and predicted labels, confidence, per-class probabilities."""
    y_pred = probabilities.argmax(axis=1)
    table = pd.DataFrame({"sample_id": list(sample_ids)})
    if y_true is not None:
        table["true_label"] = np.asarray(y_true, dtype=int)
        table["true_class"] = [class_names[i] for i in table["true_label"]]
    table["predicted_label"] = y_pred
    table["predicted_class"] = [class_names[i] for i in y_pred]
    table["confidence"] = probabilities.max(axis=1)
    if y_true is not None:
        table["correct"] = table["true_label"] == table["predicted_label"]
    probs = pd.DataFrame(probabilities, columns=[f"prob_{name}" for name in class_names])
    return pd.concat([table, probs], axis=1)


def predict(
    model_path: str | Path,
    images_or_folder,
    class_names: list[str] | None = None,
    output_csv: str | Path | None = None,
    output_dir: str | Path = "outputs",
    batch_size: int = 64,
    side_inputs: dict | None = None,
) -> pd.DataFrame:
    """Labels and probabilities for new images of any size or mode.

    Fusion and ROI models also need ``side_inputs``, one row per image:
    ``{"metadata": (N, columns), "boxes": (N, max_boxes, 4) relative x, y, w, h}``
    (``box_mask`` optional); the error for a missing one names what the model takes.
    ``images_or_folder``: a folder (searched recursively), one image path, a list of
    paths, or a list/array of RGB arrays. Class names default to those in the
    summary.json of the run that saved the model (searched under ``output_dir``).
    Writes the table to ``output_csv`` when given.
    """
    model = load_model(model_path)
    names, images = read_images(images_or_folder)
    size = model_input_size(model) or resize_target(model) or max(im.shape[0] for im in images)
    batch = np.stack([resize_image(im, size) for im in images])
    probabilities = predict_batches(model, assemble_inputs(model, batch, side_inputs), batch_size)
    num_classes = probabilities.shape[1]
    class_names = class_names or class_names_for(model_path, output_dir, num_classes)
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names given for a model with {num_classes} outputs"
        )
    table = predictions_table(names, None, probabilities, class_names)
    if output_csv:
        write_text(output_csv, table.to_csv(index=False))
    return table


def read_images(source) -> tuple[list[str], list[np.ndarray]]:
    """(names, RGB uint8 arrays) from a folder, a path, a list of paths or of arrays."""
    if isinstance(source, np.ndarray) and source.ndim == 4:
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
    names, images = [], []
    for i, item in enumerate(source):
        if isinstance(item, np.ndarray):
            image = item if item.ndim == 3 else np.repeat(item[..., None], 3, axis=-1)
            names.append(f"image_{i}")
            images.append(image[..., :3].astype(np.uint8))
        else:
            names.append(str(item))
            images.append(read_image(item))  # DataError naming the file if missing or corrupt
    return names, images


def resize_target(model) -> int | None:
    try:
        return int(model.get_layer("resize").height)
    except ValueError:
        return None


def class_names_for(model_path: str | Path, output_dir: str | Path, num_classes: int) -> list[str]:
    """Class names recorded by the training run that saved this model, else class_0..."""
    target = Path(model_path).resolve()
    for summary in sorted(Path(output_dir).glob("runs/*/summary.json"), reverse=True):
        data = read_json(summary)
        if data.get("model_path") and Path(data["model_path"]).resolve() == target:
            return list(data["class_names"])
    return [f"class_{i}" for i in range(num_classes)]


# --- the evaluate stage -------------------------------------------------------------


def evaluate(
    cfg: Config, model_path: str | Path | None = None, split: str | None = None
) -> EvalResult:
    """Evaluate a saved model on ``split`` (default ``cfg.eval.split``) and write a run dir."""
    from transferlab.pipeline import input_size_for
    from transferlab.splits import prepare_splits

    split = split or cfg.eval.split
    if split not in ("train", "val", "test"):
        close = difflib.get_close_matches(split, ["val", "test"], n=1)
        raise ValueError(
            f"split={split!r}: use 'val' or 'test'"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    model_path = Path(model_path) if model_path else default_model_path(cfg)
    model = load_model(model_path)
    dataset = load_dataset(cfg)
    table = prepare_splits(cfg, dataset)[split]
    if table.empty:
        raise DataError(f"the {split} split holds no images; check data.splits")
    size = model_input_size(model) or input_size_for(cfg, dataset)
    images = dataset.load_images(table["sample_id"], size)
    y_true = table["label"].to_numpy()
    inputs = split_inputs(model, dataset, table, images)
    probabilities = predict_batches(model, inputs, cfg.train.batch_size)
    class_names = dataset.class_names

    metrics = compute_metrics(y_true, probabilities, class_names, cfg.eval.top_k)
    metrics.update({"model_path": str(model_path), "split": split, "experiment": cfg.experiment})
    metrics["inputs"] = cfg.model.inputs
    if cfg.eval.tta > 0:
        tta = tta_probabilities(model, inputs, cfg.eval.tta, cfg.seed, cfg.train.batch_size)
        metrics["tta_passes"] = cfg.eval.tta
        metrics["tta_accuracy"] = float(skm.accuracy_score(y_true, tta.argmax(axis=1)))

    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "evaluate")
    cfg.save(run_dir / "config.json")
    predictions = predictions_table(table["sample_id"], y_true, probabilities, class_names)
    write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
    write_json(run_dir / "metrics.json", metrics)
    figures = write_figures(run_dir / "figures", images, predictions, probabilities, class_names)
    return EvalResult(run_dir, metrics, predictions, figures)


def write_figures(
    folder: Path,
    images: np.ndarray,
    predictions: pd.DataFrame,
    probabilities: np.ndarray,
    class_names,
) -> list[Path]:
    y_true = predictions["true_label"].to_numpy()
    y_pred = predictions["predicted_label"].to_numpy()
    figures = [
        plot_confusion_matrix(y_true, y_pred, class_names, folder / "confusion_matrix.png"),
        plot_confusion_matrix(
            y_true,
            y_pred,
            class_names,
            folder / "confusion_matrix_normalized.png",
            normalize="true",
        ),
        plot_roc_curves(y_true, probabilities, class_names, folder / "roc_curves.png"),
    ]
    # A fixed, evenly spaced sample keeps the grid the same on every re-run.
    shown = np.linspace(0, len(predictions) - 1, min(GRID_IMAGES, len(predictions))).astype(int)
    figures.append(
        gallery(images, predictions.iloc[shown], folder / "prediction_grid.png", "Predictions")
    )
    figures.append(
        gallery(
            images,
            confident_mistakes(predictions, GRID_IMAGES),
            folder / "confident_mistakes.png",
            "Most confident mistakes",
        )
    )
    return figures


def confident_mistakes(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """The ``count`` wrong predictions made with the highest confidence (stable on ties)."""
    wrong = predictions[~predictions["correct"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(count)


def gallery(images: np.ndarray, rows: pd.DataFrame, path: Path, title: str) -> Path:
    titles = [
        f"{'✓' if r.correct else '✗'} true {short(r.true_class)}\n"
        f"pred {short(r.predicted_class)} {r.confidence:.2f}"
        for r in rows.itertuples()
    ]
    return plot_image_grid(
        [images[i] for i in rows.index], titles, path, list(rows["correct"]), title
    )
