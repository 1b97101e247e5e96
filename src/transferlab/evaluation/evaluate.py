"""The evaluate stage: a saved model on a split, streamed, with metrics and figures.

``evaluate(cfg)`` writes ``outputs/runs/<ts>_<experiment>_evaluate/`` with
predictions.csv, metrics.json and figures/. It reads the split exactly as training's
validation pass did (same reader, size and batches), so on the validation split it
reproduces the best epoch's val_accuracy and val_loss.

metrics.json holds each headline metric's interval (``intervals``: Wilson for accuracy,
a seeded stratified bootstrap for macro-F1, balanced accuracy and ROC AUC), the
expected calibration error, and with a group column each group's accuracy. With
``eval.calibrate=true`` it also fits temperature scaling on the val split, reports
ECE before and after, and saves the temperature beside the model for predict and export.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from transferlab.config import Config
from transferlab.config.schema import did_you_mean
from transferlab.data import SPLIT_NAMES, DataError, ImageDataset, load_dataset, prepare_splits
from transferlab.data.health.duplicates import near_duplicate_ids
from transferlab.evaluation.calibration import save_calibration
from transferlab.evaluation.figures import (
    plot_confusion_matrix,
    plot_image_grid,
    plot_reliability,
    plot_roc_curves,
    short,
)
from transferlab.evaluation.inference import (
    default_model_path,
    feed_size,
    phase_of_model,
    predict_dataset,
    split_batches,
)
from transferlab.evaluation.metrics import (
    compute_metrics,
    confident_mistakes,
    cross_entropy,
    group_metrics,
    interval_metrics,
    predictions_table,
)
from transferlab.evaluation.tta import tta_probabilities
from transferlab.experiments.stats import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    format_interval,
)
from transferlab.models import load_model
from transferlab.runs import new_run_dir, write_json, write_text
from transferlab.runs.tracking import check_tracking, track_run

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
        intervals = m.get("intervals", {})

        def shown(key: str) -> str:
            bounds = intervals.get(key, {})
            return format_interval(m[key], bounds.get("low"), bounds.get("high"))

        calibrated = ""
        if "calibration" in m:
            c = m["calibration"]
            calibrated = (
                f", temperature {c['temperature']:.3f} (ECE {c['ece_before']:.4f} -> "
                f"{c['ece_after']:.4f})"
            )
        return (
            f"{m['split']} accuracy {shown('accuracy')}, macro-F1 {shown('macro_f1')} "
            f"on {m['num_samples']} images, ECE {m.get('ece', float('nan')):.4f}{calibrated}; "
            f"{self.run_dir}"
        )


def evaluate(
    cfg: Config, model_path: str | Path | None = None, split: str | None = None
) -> EvalResult:
    """Evaluate a saved model on ``split`` (default ``cfg.eval.split``) and write a run dir."""
    split = check_split(split or cfg.eval.split)
    check_tracking(cfg)  # an unreachable MLflow store stops here, before any work
    model_path = Path(model_path) if model_path else default_model_path(cfg)
    model = load_model(model_path)
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    table = splits[split]
    if table.empty:
        raise DataError(f"the {split} split holds no images; check data.splits")
    batches = split_batches(model, cfg, dataset, table)
    probabilities = predict_dataset(model, batches, len(table), f"evaluate on {split}")
    y_true = table["label"].to_numpy()
    class_names = dataset.class_names

    metrics = compute_metrics(y_true, probabilities, class_names, cfg.eval.top_k)
    metrics.update(
        model_path=str(model_path),
        # The better of the two phases' models unless one was named: say which it is.
        model_phase=phase_of_model(cfg, model_path),
        split=split,
        experiment=cfg.experiment,
        inputs=cfg.model.inputs,
        input_size=feed_size(model, cfg, dataset),
        # As training computes val_loss (label smoothing included), so the two compare.
        loss=cross_entropy(y_true, probabilities, cfg.train.label_smoothing),
    )
    e = cfg.eval
    metrics.update(
        interval_metrics(
            y_true, probabilities, e.confidence, e.bootstrap, e.calibration_bins, cfg.seed
        )
    )
    if "group" in table:
        y_pred = probabilities.argmax(axis=1)
        metrics.update(group_metrics(y_true, y_pred, table["group"], e.confidence) or {})
    if cfg.eval.tta > 0:
        tta = tta_probabilities(
            model, batches, len(table), cfg.eval.tta, cfg.seed, plain=probabilities
        )
        metrics["tta_passes"] = cfg.eval.tta
        metrics["tta_accuracy"] = float(skm.accuracy_score(y_true, tta.argmax(axis=1)))
    if e.exclude_near_duplicates:
        metrics["without_near_duplicates"] = without_near_duplicates(
            cfg, splits.directory, table, probabilities, class_names
        )

    calibrated, temperature = None, None
    if e.calibrate:
        val = probabilities if split == "val" else None
        temperature = fit_on_val(model, cfg, dataset, splits["val"], val)
        calibrated = apply_temperature(probabilities, temperature)
        metrics["calibration"] = {
            "temperature": temperature,
            "ece_before": metrics["ece"],
            "ece_after": expected_calibration_error(y_true, calibrated, e.calibration_bins),
            "fitted_on": "val",
            # Fitted and scored on the same images: the ECE after is optimistic.
            "in_sample": split == "val",
        }

    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "evaluate")
    cfg.save(run_dir / "config.json")
    predictions = predictions_table(table["sample_id"], y_true, probabilities, class_names)
    write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
    if temperature is not None:
        saved = save_calibration(
            model_path,
            temperature,
            fitted_on="val",
            val_images=len(splits["val"]),
            run=run_dir.name,
        )
        metrics["calibration"]["file"] = str(saved)
    write_json(run_dir / "metrics.json", metrics)
    figures = write_figures(
        run_dir / "figures",
        dataset,
        metrics["input_size"],
        predictions,
        probabilities,
        bins=e.calibration_bins,
        calibrated=calibrated,
        temperature=temperature,
    )
    track_run(cfg, run_dir, "evaluate")
    return EvalResult(run_dir, metrics, predictions, figures)


def without_near_duplicates(cfg: Config, directory: Path, table, probabilities, class_names):
    """The headline metrics without the images in cross-split near-duplicate groups."""
    left_out = set(near_duplicate_ids(directory))
    keep = ~table["sample_id"].astype(str).isin(left_out).to_numpy()
    if not keep.any():
        return {"num_samples": 0, "excluded": int((~keep).sum())}
    kept = compute_metrics(
        table["label"].to_numpy()[keep], probabilities[keep], class_names, cfg.eval.top_k
    )
    return {
        **{k: kept[k] for k in ("accuracy", "macro_f1", "num_samples") if k in kept},
        "excluded": int((~keep).sum()),
    }


def fit_on_val(model, cfg: Config, dataset: ImageDataset, val: pd.DataFrame, probabilities=None):
    """Temperature scaling fitted on the val split, predicted as evaluation predicts.

    ``probabilities``: val's, when the evaluated split is val and they are at hand.
    """
    if val.empty:
        raise DataError(
            "eval.calibrate=true fits a temperature on the val split, which holds no images; "
            "give data.splits a val fraction, or set eval.calibrate=false"
        )
    if probabilities is None:
        batches = split_batches(model, cfg, dataset, val)
        probabilities = predict_dataset(model, batches, len(val), "calibrate on val")
    temperature = fit_temperature(val["label"].to_numpy(), probabilities)
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] / 1.01:
        warnings.warn(
            f"the fitted temperature {temperature:.3g} is at the edge of the range searched "
            f"{TEMPERATURE_BOUNDS}: on val the model's probabilities carry almost no "
            "information (or are almost all exactly right). Check the model is trained "
            "before relying on its calibrated probabilities",
            stacklevel=2,
        )
    return temperature


def check_split(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(
            f"split={split!r}: use 'val' or 'test'{did_you_mean(split, ['val', 'test'])}"
        )
    return split


def write_figures(
    folder: Path,
    dataset: ImageDataset,
    size: int,
    predictions: pd.DataFrame,
    probabilities: np.ndarray,
    bins: int = 15,
    calibrated: np.ndarray | None = None,
    temperature: float | None = None,
) -> list[Path]:
    """Confusion matrices, ROC curves, reliability and two galleries; only shown images are read.

    ``calibrated``: the probabilities after temperature scaling, drawn in the reliability
    diagram beside the model's own.
    """
    y_true = predictions["true_label"].to_numpy()
    y_pred = predictions["predicted_label"].to_numpy()
    class_names = dataset.class_names
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
        plot_reliability(
            y_true, probabilities, folder / "reliability.png", bins, calibrated, temperature
        ),
    ]
    # A fixed, evenly spaced sample keeps the grid the same on every re-run.
    shown = np.linspace(0, len(predictions) - 1, min(GRID_IMAGES, len(predictions))).astype(int)
    galleries = {
        "prediction_grid.png": ("Predictions", predictions.iloc[shown]),
        "confident_mistakes.png": (
            "Most confident mistakes",
            confident_mistakes(predictions, GRID_IMAGES),
        ),
    }
    for name, (title, rows) in galleries.items():
        figures.append(gallery(dataset, size, rows, folder / name, title))
    return figures


def gallery(dataset: ImageDataset, size: int, rows: pd.DataFrame, path: Path, title: str) -> Path:
    titles = [
        f"{'✓' if r.correct else '✗'} true {short(r.true_class)}\n"
        f"pred {short(r.predicted_class)} {r.confidence:.2f}"
        for r in rows.itertuples()
    ]
    images = list(dataset.load_images(rows["sample_id"], size)) if len(rows) else []
    return plot_image_grid(images, titles, path, list(rows["correct"]), title)
