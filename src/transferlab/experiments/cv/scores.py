"""Scoring a cross-validation: per-fold metrics, their mean and t-interval over folds,
per-group accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from transferlab.experiments.stats import wilson_interval

METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
CONFIDENCE = 0.95


def score(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int) -> dict:
    """Accuracy, macro-F1 (over every class, as evaluation's) and balanced accuracy."""
    y_pred = probabilities.argmax(axis=1)
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            skm.f1_score(
                y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0
            )
        ),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
    }


def fold_metrics_table(oof: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """One row per fold: its held-out images' count and metrics."""
    rows = []
    for fold, part in oof.groupby("fold", sort=True):
        rows.append(
            {
                "fold": int(fold),
                **score(part["label"].to_numpy(), probability_matrix(part), num_classes),
            }
        )
    return pd.DataFrame(rows, columns=["fold", "n", *METRICS])


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Mean of the per-fold values and its t-interval over folds (K - 1 degrees of freedom).

    The interval says where the mean over folds would fall for other fold draws of data
    like this; folds share training images, so it is, if anything, a little narrow.
    """
    values = np.asarray(values, dtype=float)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if sd == 0:  # every fold scored the same: scipy would return nan
        low = high = mean
    else:
        low, high = stats.t.interval(
            confidence, len(values) - 1, loc=mean, scale=sd / np.sqrt(len(values))
        )
    return {
        "mean": mean,
        "sd": sd,
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
    }


def group_accuracy(oof: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Each group's out-of-fold accuracy with its Wilson interval, weakest first.

    Rows without a group are left out (as evaluation's per-group table leaves them).
    """
    named = oof[oof["group"] != ""]
    table = (
        named.assign(correct=named["predicted"] == named["label"])
        .groupby("group", sort=True)
        .agg(fold=("fold", "first"), n=("correct", "size"), correct=("correct", "sum"))
        .reset_index()
    )
    table["accuracy"] = table["correct"] / table["n"]
    bounds = [
        wilson_interval(int(c), int(n), confidence)
        for c, n in zip(table["correct"], table["n"], strict=True)
    ]
    table["low"] = [b[0] for b in bounds]
    table["high"] = [b[1] for b in bounds]
    return table.sort_values(["accuracy", "group"], kind="stable").reset_index(drop=True)


def group_spread(groups: pd.DataFrame) -> dict:
    """How per-group accuracy is spread: count, mean, sd, quartiles and the weakest groups."""
    acc = groups["accuracy"].to_numpy(dtype=float)
    if acc.size == 0:
        return {"groups": 0}
    q = np.percentile(acc, [0, 25, 50, 75, 100])
    return {
        "groups": int(acc.size),
        "mean": float(acc.mean()),
        "sd": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
        "min": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "max": float(q[4]),
        "weakest": groups.head(5)[["group", "n", "accuracy", "low", "high"]].to_dict("records"),
    }


def with_probabilities(
    frame: pd.DataFrame, probabilities: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """``frame`` (one row per image) with the predicted class and a prob_<class> column each."""
    predicted = probabilities.argmax(axis=1)
    columns = pd.DataFrame(probabilities, columns=probability_columns(class_names))
    return pd.concat(
        [
            frame.reset_index(drop=True).assign(
                predicted=predicted, predicted_class=np.asarray(class_names)[predicted]
            ),
            columns,
        ],
        axis=1,
    )


def probability_columns(class_names: list[str]) -> list[str]:
    return [f"prob_{name}" for name in class_names]


def probability_matrix(oof: pd.DataFrame) -> np.ndarray:
    """The (N, classes) probabilities held in an out-of-fold table's prob_ columns."""
    return oof.filter(regex=r"^prob_").to_numpy(dtype=float)
