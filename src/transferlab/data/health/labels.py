"""Likely label errors and outliers, from files other stages wrote.

Out-of-fold probabilities come from the newest k-fold run's oof_probabilities.csv
(``make cv``); without one, from a quick internal cross-validation (logistic
regression, ``cross_val_predict``) on the cached backbone features
(outputs/features/). cleanlab's ``find_label_issues`` ranks the images whose given
label the other images' model doubts most; cleanlab's ``OutOfDistribution`` scores
how far each image lies from its nearest neighbours in feature space (outliers).
Neither stage is imported: only their files are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.runs import read_json

PROBABILITY_PREFIX = "prob_"


def newest_oof_file(output_dir: str | Path, experiment: str) -> Path | None:
    """The newest ``outputs/runs/<ts>_<experiment>_cv/oof_probabilities.csv``, if any."""
    found = sorted(Path(output_dir, "runs").glob(f"*_{experiment}_cv/oof_probabilities.csv"))
    return found[-1] if found else None


def recorded_images(oof_path: Path) -> str:
    """The images digest the k-fold run beside ``oof_path`` recorded ("" if none: older)."""
    summary = oof_path.parent / "cv.json"
    if not summary.is_file():
        return ""
    try:
        return str(read_json(summary).get("images_digest", ""))
    except (ValueError, AttributeError):  # unreadable: judged by its sample ids alone
        return ""


def newest_features_file(
    output_dir: str | Path, experiment: str, rows: int, images: str | None = None
) -> Path | None:
    """The newest ``outputs/features/<experiment>_<key>.npz`` holding ``rows`` feature rows.

    Its rows follow the train, val and test splits' order (experiments.features). A file
    that records another ``images`` digest (``data.caching.images_digest``) is of images
    since replaced, and is passed over.
    """
    candidates = sorted(
        Path(output_dir, "features").glob(f"{experiment}_*.npz"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        with np.load(path) as data:
            if "features" not in data or len(data["features"]) != rows:
                continue
            if images is not None and "images" in data and str(data["images"]) != images:
                continue
            return path
    return None


def oof_from_file(path: Path, table: pd.DataFrame, class_names: list[str]) -> np.ndarray | None:
    """The file's probabilities row-aligned with ``table``, or None when its images differ."""
    oof = pd.read_csv(path, dtype={"sample_id": str}, keep_default_na=False)
    columns = [f"{PROBABILITY_PREFIX}{c}" for c in class_names]
    if any(c not in oof for c in columns):
        return None
    index = pd.Index(oof["sample_id"]).get_indexer(table["sample_id"].astype(str))
    if (index < 0).any():
        return None  # a k-fold run on other images (before corrections, another subset)
    return oof[columns].to_numpy(float)[index]


def internal_oof(features: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold probabilities of a logistic regression on ``features``."""
    smallest = int(np.bincount(labels).min())
    folds = max(2, min(folds, smallest))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, cv=split, method="predict_proba")


def rank_label_issues(
    table: pd.DataFrame, probabilities: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """The images cleanlab finds likely mislabelled, most likely first.

    Columns: sample_id, path, split, label (given), suggested, score (the given label's
    self-confidence: lower is more suspect).
    """
    from cleanlab.filter import find_label_issues

    labels = table["label"].to_numpy(int)
    ranked = find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    rows = table.iloc[ranked]
    return pd.DataFrame(
        {
            "sample_id": rows["sample_id"].astype(str).to_numpy(),
            "path": rows["path"].to_numpy() if "path" in rows else "",
            "split": rows["split"].to_numpy(),
            "label": np.asarray(class_names)[labels[ranked]],
            "suggested": np.asarray(class_names)[probabilities[ranked].argmax(axis=1)],
            "score": probabilities[ranked, labels[ranked]].round(4),
        }
    )


def rank_outliers(table: pd.DataFrame, features: np.ndarray, count: int) -> pd.DataFrame:
    """The ``count`` images farthest from their nearest neighbours (cleanlab's
    OutOfDistribution score: lower is farther), farthest first."""
    from cleanlab.outlier import OutOfDistribution

    k = max(1, min(10, len(features) - 1))
    scores = OutOfDistribution(params={"k": k}).fit_score(features=features)
    order = np.argsort(scores)[:count]
    rows = table.iloc[order]
    return pd.DataFrame(
        {
            "sample_id": rows["sample_id"].astype(str).to_numpy(),
            "path": rows["path"].to_numpy() if "path" in rows else "",
            "split": rows["split"].to_numpy(),
            "label": rows["class_name"].to_numpy(),
            "score": scores[order].round(4),
        }
    )
