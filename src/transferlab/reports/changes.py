"""Which changes a report may call real: phase 1 → phase 2 and day over day.

A change is tested image by image on the images both runs were scored on (exact
McNemar for accuracy, a paired bootstrap for macro-F1; ``experiments.paired``), and
called better or worse only when p < compare.alpha. Without per-image predictions of
both, or with different images, the change is shown as untested, never as a verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.experiments.paired import compare_predictions
from transferlab.experiments.stats import format_interval, metric_intervals, wilson_interval
from transferlab.reports.markdown import num
from transferlab.reports.runfiles import RunFiles, earlier_run

# Key results by the metric their paired test measures.
METRIC_OF = {"val_accuracy": "accuracy", "val_macro_f1": "macro_f1", "test_accuracy": "accuracy"}
# Why a change went untested, shown under the table that holds it.
NO_PREDICTIONS = "no per-image predictions of both runs (val_predictions.csv, predictions.csv)"


def paired_settings(config: dict[str, Any]) -> dict[str, Any]:
    """alpha, confidence, resamples and seed of a run's config.json (defaults if absent)."""
    evaluation = config.get("eval", {})
    return {
        "alpha": config.get("compare", {}).get("alpha", 0.05),
        "confidence": evaluation.get("confidence", 0.95),
        "resamples": evaluation.get("bootstrap", 1000),
        "seed": config.get("seed", 0),
    }


def different_images(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Why two prediction tables cover different images, or "" when they are the same."""
    if len(before) != len(after):
        return f"{len(before)} images against {len(after)}"
    if not (before["sample_id"].astype(str).to_numpy() == after["sample_id"].astype(str)).all():
        return "different images"
    if not (before["true_label"].to_numpy() == after["true_label"].to_numpy()).all():
        return "different labels"
    if prob_columns(before) != prob_columns(after):
        return "different classes"
    return ""


def prob_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("prob_")]


def paired_test(
    before: pd.DataFrame | None, after: pd.DataFrame | None, names, settings: dict[str, Any]
) -> dict[str, Any]:
    """``compare_predictions`` of after against before, or ``{"untested": why}``."""
    if before is None or after is None:
        return {"untested": NO_PREDICTIONS}
    why = different_images(before, after)
    if why:
        return {"untested": f"scored on different images ({why})"}
    columns = prob_columns(before)
    return compare_predictions(
        before["true_label"].to_numpy(),
        before[columns].to_numpy(dtype=float),
        after[columns].to_numpy(dtype=float),
        names=names,
        **settings,
    )


def read_predictions(path: str | Path | None) -> pd.DataFrame | None:
    if not path or not Path(path).is_file():
        return None
    return pd.read_csv(path, dtype={"sample_id": str})


def phase_change(phase2: RunFiles) -> dict[str, Any]:
    """Phase 2 against phase 1 on the same validation images.

    Phase 1's run is the newest one begun before phase 2's: the one phase 2 started from.
    """
    experiment = phase2.summary.get("experiment") or phase2.config.get("experiment", "")
    phase1 = earlier_run(phase2.path, experiment, "phase1")
    before = read_predictions(phase1 / "val_predictions.csv") if phase1 else None
    settings = paired_settings(phase2.config)
    return paired_test(before, phase2.val_predictions, ("phase 1", "phase 2"), settings)


def change_cell(difference: float | None, test: dict[str, Any] | None, key: str) -> str:
    """``+0.0300 [-0.0100, +0.0700], p = 0.160`` when tested; the bare change marked untested."""
    if test and test.get("same_run"):
        return f"{signed(difference or 0.0)} (same run)"
    if test and "untested" not in test:
        part = test[METRIC_OF[key]]
        low, high = signed(part["low"]), signed(part["high"])
        p = part["p_value"]
        shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
        return f"{signed(part['difference'])} [{low}, {high}], {shown}"
    if difference is None:
        return "—"
    return f"{signed(difference)} (untested)"


def signed(change: float) -> str:
    return f"+{num(change)}" if change > 0 else num(change)


def verdicts(items: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """A sentence per tested (label, key result, test), and one per reason others went untested."""
    lines, untested = [], {}
    for label, key, test in items:
        if test.get("same_run"):
            continue
        if "untested" in test:
            untested[test["untested"]] = True
            continue
        lines.append(f"{label}: {test[METRIC_OF[key]]['verdict']}.")
    lines += [f"Untested: {why}; a change without a paired test may be noise." for why in untested]
    return lines


def with_interval(value: float | None, interval: dict | None) -> Any:
    """``0.6440 [0.4985, 0.7681]`` when an interval is known; the bare value otherwise."""
    if value is None or not interval:
        return value
    return format_interval(float(value), interval.get("low"), interval.get("high"))


def accuracy_interval(value: float | None, images: int | None, confidence: float = 0.95):
    """Wilson interval of an accuracy measured on ``images`` images."""
    if value is None or not images:
        return None
    low, high = wilson_interval(round(float(value) * images), int(images), confidence)
    return {"low": low, "high": high, "method": "wilson"}


def val_macro_f1_interval(run: RunFiles) -> dict | None:
    """Stratified bootstrap interval of macro-F1 on a phase's validation predictions.

    val_predictions.csv holds the best model's prediction of every validation image, so
    the interval is that of the best epoch's val macro-F1 (seeded: the same every time).
    """
    frame = run.val_predictions
    if frame is None or frame.empty:
        return None
    probabilities = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
    return metric_intervals(frame["true_label"].to_numpy(), probabilities)["macro_f1"]


def evaluate_accuracy_interval(evaluation: RunFiles) -> dict | None:
    """evaluate's own interval (metrics.json), else Wilson on its images."""
    metrics = evaluation.metrics
    found = (metrics.get("intervals") or {}).get("accuracy")
    if found:
        return found
    images = metrics.get("num_samples")
    if images is None and evaluation.predictions is not None:
        images = len(evaluation.predictions)
    return accuracy_interval(metrics.get("accuracy"), images)
