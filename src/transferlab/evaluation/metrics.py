"""Metrics of a set of predictions: scikit-learn's, their intervals, calibration and
per-group accuracy, plus the table every stage writes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from transferlab.experiments.stats import (
    expected_calibration_error,
    metric_intervals,
    wilson_interval,
)


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


def interval_metrics(
    y_true, probabilities: np.ndarray, confidence: float, resamples: int, bins: int, seed: int
) -> dict[str, Any]:
    """metrics.json's intervals (Wilson, stratified bootstrap) and expected calibration error."""
    return {
        "intervals": metric_intervals(y_true, probabilities, confidence, resamples, seed),
        "confidence": confidence,
        "bootstrap_resamples": resamples,
        "ece": expected_calibration_error(y_true, probabilities, bins),
        "calibration_bins": bins,
    }


def group_metrics(y_true, y_pred, groups, confidence: float = 0.95) -> dict[str, Any] | None:
    """Each group's (subject's) n and accuracy with its Wilson interval, and their spread.

    Images without a group are left out of both. None when no image has a group.
    """
    groups = np.asarray(groups, dtype=str)
    named = groups != ""
    if not named.any():
        return None
    correct = np.asarray(y_true)[named] == np.asarray(y_pred)[named]
    per_group = {}
    for group in np.unique(groups[named]):
        hits = correct[groups[named] == group]
        low, high = wilson_interval(int(hits.sum()), len(hits), confidence)
        per_group[str(group)] = {
            "n": int(len(hits)),
            "accuracy": float(hits.mean()),
            "low": low,
            "high": high,
        }
    accuracies = np.array([g["accuracy"] for g in per_group.values()])
    spread = {
        "groups": len(accuracies),
        "mean": float(accuracies.mean()),
        # Across subjects, as a sample of the subjects one might meet (n - 1).
        "std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
        "min": float(accuracies.min()),
        "max": float(accuracies.max()),
    }
    return {"per_group": per_group, "group_spread": spread}


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


def confident_mistakes(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """The ``count`` wrong predictions made with the highest confidence (stable on ties)."""
    wrong = predictions[~predictions["correct"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(count)


def cross_entropy(y_true, probabilities: np.ndarray, label_smoothing: float = 0.0) -> float:
    """Mean categorical cross-entropy (label smoothing included), as training reports it.

    Keras computes training's loss from the logits behind the softmax, with no clipping;
    clipping the probabilities at 1e-7, as the loss functions do when given
    probabilities, would understate the loss of confident mistakes.
    """
    count, classes = probabilities.shape
    targets = np.full((count, classes), label_smoothing / classes)
    targets[np.arange(count), np.asarray(y_true)] += 1.0 - label_smoothing
    tiny = np.finfo(np.float32).tiny  # only a probability that underflowed to 0 is moved
    log_p = np.log(np.maximum(probabilities.astype(np.float64), tiny))
    return float(-(targets * log_p).sum(axis=1).mean())
