"""Stratified k folds over train + val, group-exclusive when the data has groups."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from transferlab.data.splits import group_codes


class CVError(ValueError):
    """Data that cannot be cross-validated as asked; the message says what to change."""


def assign_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    k: int,
    seed: int,
    class_names: list[str],
    grouped: bool,
) -> np.ndarray:
    """The held-out fold (0..k-1) of each row: stratified, and group-exclusive if grouped.

    Rows without a group are groups of one, as the train/val/test split treats them.
    """
    if len(labels) < 2 * k:
        raise CVError(
            f"cv.folds={k} needs at least {2 * k} train + val images (two per fold); there "
            f"are {len(labels)}. Lower cv.folds or add images"
        )
    codes = group_codes(groups)[0] if grouped else np.arange(len(labels))
    check_fold_count(labels, codes, k, class_names, grouped)
    if grouped:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels, codes)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels)
    folds = np.full(len(labels), -1)
    for fold, (_, held_out) in enumerate(parts):
        folds[held_out] = fold
    empty = sorted(set(range(k)) - set(folds.tolist()))
    if empty:
        raise CVError(
            f"cv.folds={k}: fold(s) {empty} got no images (the groups are too few or too "
            "unequal); lower cv.folds"
        )
    return folds


def check_fold_count(
    labels: np.ndarray, codes: np.ndarray, k: int, class_names: list[str], grouped: bool
) -> None:
    """Every class needs a sample (a group, when grouped) in each fold: name the one short."""
    unit = "groups" if grouped else "images"
    holding = {
        label: len(np.unique(codes[labels == label])) for label in np.unique(labels).tolist()
    }
    smallest = min(holding, key=lambda label: (holding[label], label))
    count, name = holding[smallest], class_names[smallest]
    if count >= k:
        return
    if count < 2:
        raise CVError(
            f"class {name!r} has only 1 {unit[:-1]} in train + val, so it cannot be held out "
            f"in one fold and trained on in another; add images of that class"
            + (" from more groups" if grouped else "")
            + ", or leave the class out"
        )
    raise CVError(
        f"cv.folds={k} is too many: class {name!r} has only {count} {unit} in train + val, "
        f"and every fold needs one of each class's {unit}, so the largest K allowed is "
        f"{count}. Lower it (make cv K={count}), or add images of that class"
        + (" from more groups" if grouped else "")
    )
