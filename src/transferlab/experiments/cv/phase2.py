"""Phase 2 (fine-tuning) in every fold: ``cv.phase2=true``.

Each fold runs as an experiment of its own through the ordinary training, not a copy
of it: the fold's splits (train = the other folds, val = the held-out fold, test = the
test split unchanged) are written in the splits format under their own dataset name,
``<dataset>_cv<K>fold<i>``, and ``train_phase`` runs phase 1 and then phase 2 on them
as experiment ``<experiment>_cv<K>fold<i>`` (its own models, checkpoints and runs, so
an interrupted fold resumes). Each fold's best model is then scored on its held-out
fold.

Training picks its best epoch (and phase 2 is kept only if it beats phase 1) on its
val split, here the held-out fold, so these fold scores lean a little optimistic; the
phase-1 heads on cached features use no early stopping and do not.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data import ImageDataset, load_dataset, prepare_splits
from transferlab.data.splits import split_settings, write_splits
from transferlab.evaluation.inference import default_model_path, predict_dataset, split_batches
from transferlab.experiments.cv.files import IMAGE_COLUMNS
from transferlab.experiments.cv.scores import (
    METRICS,
    fold_metrics_table,
    mean_interval,
    probability_matrix,
    score,
    with_probabilities,
)
from transferlab.models import load_model
from transferlab.progress import say
from transferlab.runs import splits_dir, write_json
from transferlab.training import train_phase

NOTE = (
    "Each fold's training chose its best epoch (and whether phase 2 beat phase 1) on the "
    "held-out fold, so these scores lean a little optimistic."
)


def fine_tune_folds(cfg: Config, oof: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Train phases 1 and 2 per fold on the folds in ``oof``; score each on its held-out fold.

    Returns the per-fold metrics, their mean with its t-interval over folds and the pooled
    out-of-fold metrics; and the out-of-fold table of the fine-tuned models.
    """
    dataset = load_dataset(cfg)
    test = prepare_splits(cfg, dataset).test
    parts, experiments = [], []
    for fold in range(cfg.cv.folds):
        fold_cfg = fold_config(cfg, fold)
        write_fold_splits(fold_cfg, dataset, oof, test, fold)
        say(f"cv fold {fold + 1}/{cfg.cv.folds}: phase 1 and phase 2 as {fold_cfg.experiment}")
        train_phase(fold_cfg, "phase1")
        train_phase(fold_cfg, "phase2")
        parts.append(score_held_out(fold_cfg, dataset, oof[oof["fold"] == fold]))
        experiments.append(fold_cfg.experiment)
    result = pd.concat(parts, ignore_index=True)
    per_fold = fold_metrics_table(result, len(dataset.class_names))
    labels = result["label"].to_numpy()
    summary = {
        "per_fold": per_fold.to_dict("records"),
        "mean": {m: mean_interval(per_fold[m].to_numpy(), cfg.eval.confidence) for m in METRICS},
        "out_of_fold": score(labels, probability_matrix(result), len(dataset.class_names)),
        "experiments": experiments,
        "note": NOTE,
    }
    return summary, result


def fold_config(cfg: Config, fold: int) -> Config:
    """``cfg`` as the fold's own experiment, reading the fold's own splits."""
    fold_cfg = copy.deepcopy(cfg)
    tag = f"cv{cfg.cv.folds}fold{fold + 1}"
    fold_cfg.experiment = f"{cfg.experiment}_{tag}"
    fold_cfg.data.name = f"{cfg.dataset_name}_{tag}"
    fold_cfg.cv.phase2 = False
    return fold_cfg


def write_fold_splits(
    fold_cfg: Config, dataset: ImageDataset, oof: pd.DataFrame, test: pd.DataFrame, fold: int
) -> None:
    """The fold's train/val/test in the splits format, where ``prepare_splits`` reads them."""
    assignment = np.full(len(dataset.table), "", dtype=object)
    assignment[dataset.rows(test["sample_id"])] = "test"
    positions = dataset.rows(oof["sample_id"])
    assignment[positions] = np.where(oof["fold"].to_numpy() == fold, "val", "train")
    directory = splits_dir(fold_cfg)
    write_splits(directory, dataset, assignment)
    # Written last: prepare_splits reuses the folder only when these settings match.
    write_json(directory / "settings.json", split_settings(fold_cfg, dataset))


def score_held_out(fold_cfg: Config, dataset: ImageDataset, held_out: pd.DataFrame):
    """The fold's best model's probabilities on its held-out images, one row per image."""
    model = load_model(default_model_path(fold_cfg))
    table = held_out[["sample_id", "label"]].reset_index(drop=True)
    batches = split_batches(model, fold_cfg, dataset, table)
    probabilities = predict_dataset(model, batches, len(table), "held-out fold")
    frame = held_out[[*IMAGE_COLUMNS, "fold"]]
    return with_probabilities(frame, probabilities.astype(np.float64), dataset.class_names)
