"""k-fold cross-validation over train + val: ``make cv K=5``.

One split gives one number; on a few hundred images, or a few subjects, that number
swings from split to split. Here train + val are cut into K stratified folds (each
group, e.g. a subject, whole in one fold when ``data.group_column`` is set); the test
split is never touched. In each fold phase 1's head trains on the other K - 1 folds,
on backbone features computed once (``experiments.features``), and is scored on the
held-out fold. Every train + val image is held out exactly once, so the run also gives
each image an out-of-fold probability per class: what label-error finding reads.

``folds`` cuts the folds, ``scores`` scores them, ``files`` writes the run folder.

``cv.phase2=true`` also fine-tunes in every fold (``cv.phase2``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data import load_dataset
from transferlab.experiments.cv.files import CVResult, write_cv_files
from transferlab.experiments.cv.folds import CVError, assign_folds
from transferlab.experiments.cv.scores import (
    METRICS,
    fold_metrics_table,
    group_accuracy,
    mean_interval,
    probability_matrix,
    score,
    with_probabilities,
)
from transferlab.experiments.features import (
    FeatureTable,
    backbone_features,
    predict_head,
    train_head,
)
from transferlab.experiments.lr_finder import with_head_learning_rate
from transferlab.progress import say
from transferlab.runs import new_run_dir
from transferlab.runs.tracking import check_tracking, track_run

__all__ = ["CVError", "CVResult", "assign_folds", "cross_validate", "mean_interval"]


def cross_validate(cfg: Config) -> CVResult:
    """K-fold cross-validation of phase 1's head on cached features (and phase 2, opt-in)."""
    started = time.perf_counter()
    check_tracking(cfg)  # an unreachable MLflow store stops here, before any work
    table = backbone_features(cfg)
    # phase1.learning_rate=auto: the finder's suggestion, found once on these features and
    # recorded in the run's config.json.
    cfg = with_head_learning_rate(cfg, table)
    rows = table.rows("train", "val")
    grouped = bool(cfg.data.group_column)
    folds = assign_folds(
        table.labels[rows], table.groups[rows], cfg.cv.folds, cfg.seed, table.class_names, grouped
    )
    probabilities = out_of_fold_probabilities(cfg, table, rows, folds)
    oof = oof_table(cfg, table, rows, folds, probabilities)
    per_fold = fold_metrics_table(oof, table.num_classes)
    confidence = cfg.eval.confidence  # every interval in the project is at this level
    phase2 = phase2_oof = None
    if cfg.cv.phase2:
        from transferlab.experiments.cv.phase2 import fine_tune_folds

        phase2, phase2_oof = fine_tune_folds(cfg, oof)
    # The run folder is made only now, so a run stopped before this leaves none behind.
    result = CVResult(
        run_dir=new_run_dir(cfg.output_dir, cfg.experiment, "cv"),
        folds=cfg.cv.folds,
        grouped=grouped,
        per_fold=per_fold,
        summary={m: mean_interval(per_fold[m].to_numpy(), confidence) for m in METRICS},
        pooled=score(oof["label"].to_numpy(), probability_matrix(oof), table.num_classes),
        oof=oof,
        groups=group_accuracy(oof, confidence) if grouped else None,
        phase2=phase2,
        phase2_oof=phase2_oof,
        images_digest=table.pool_images,
    )
    result.figures = write_cv_files(cfg, result, time.perf_counter() - started)
    track_run(cfg, result.run_dir, "cv")
    return result


def out_of_fold_probabilities(
    cfg: Config, table: FeatureTable, rows: np.ndarray, folds: np.ndarray
) -> np.ndarray:
    """Each row's class probabilities from the head that did not train on it.

    The head trains phase 1's epochs with no early stopping: the held-out fold only
    scores, so it cannot flatter its own score by choosing the epoch.
    """
    probabilities = np.zeros((len(rows), table.num_classes))
    for fold in range(cfg.cv.folds):
        held_out = folds == fold
        say(f"cv fold {fold + 1}/{cfg.cv.folds}: head on {int((~held_out).sum())} images")
        head, _ = train_head(cfg, table, rows[~held_out])
        probabilities[held_out] = predict_head(head, table, rows[held_out])
    return probabilities


def oof_table(
    cfg: Config,
    table: FeatureTable,
    rows: np.ndarray,
    folds: np.ndarray,
    probabilities: np.ndarray,
) -> pd.DataFrame:
    """One row per train + val image: who it is, its label, fold and probabilities."""
    labels = table.labels[rows]
    frame = pd.DataFrame(
        {
            "sample_id": table.sample_ids[rows].astype(str),
            "path": sample_paths(cfg, table.sample_ids[rows]),
            "split": table.splits[rows],
            "group": table.groups[rows],
            "label": labels,
            "class_name": np.asarray(table.class_names)[labels],
            "fold": folds,
        }
    )
    return with_probabilities(frame, probabilities, table.class_names)


def sample_paths(cfg: Config, sample_ids: np.ndarray) -> list[str]:
    """Each sample's image file ("" for in-memory datasets such as digits and CIFAR-10)."""
    dataset = load_dataset(cfg)
    if "path" not in dataset.table:
        return [""] * len(sample_ids)
    paths = dataset.table["path"].fillna("").astype(str).to_numpy()
    return paths[dataset.rows(sample_ids)].tolist()
