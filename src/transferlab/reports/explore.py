"""Data exploration helpers for notebook 01: class balance and sample images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.data import ImageDataset
from transferlab.evaluation.figures import plot_image_grid
from transferlab.runs import read_json


def class_balance_table(splits_dir: str | Path) -> pd.DataFrame:
    """Images per class (rows) and split (columns), from the splits' balance.json."""
    balance = read_json(Path(splits_dir) / "balance.json")
    table = pd.DataFrame(balance)
    table.loc["total"] = table.sum()
    return table


def audit_summary(splits_dir: str | Path) -> str:
    """The leakage audit in a few lines (the whole record stays in audit.json)."""
    path = Path(splits_dir) / "audit.json"
    audit = read_json(path)
    duplicates, groups = audit["duplicates_across_splits"], audit["shared_groups"]
    lines = [
        f"{len(duplicates)} image(s) byte-identical across splits",
        f"{len(groups)} group(s) in more than one split",
    ]
    near = audit.get("near_duplicates")  # written by make data-health
    if near:
        lines.append(f"{near['cross_split_groups']} near-duplicate group(s) across splits")
    verdict = "clean" if audit["clean"] and not (near and near["cross_split_groups"]) else "LEAKS"
    return f"Leakage audit: {verdict}; " + "; ".join(lines) + f" (details: {path})"


def plot_samples(
    dataset: ImageDataset,
    split: pd.DataFrame,
    path: str | Path,
    size: int,
    per_class: int = 2,
) -> Path:
    """``per_class`` training images of each class (at most 10 classes), as the model sees them.

    ``size``: the side the input pipeline feeds the model (``input_size_for``).
    """
    picked = split.groupby("label", sort=True).head(per_class).sort_values("label")
    picked = picked[picked["label"] < 10]
    images = list(dataset.load_images(picked["sample_id"], size))
    titles = [dataset.class_names[label] for label in picked["label"]]
    columns = min(len(images), 2 * per_class) if len(images) > 0 else 1
    return plot_image_grid(
        images, titles, path, suptitle=f"{dataset.name}: samples", columns=columns
    )
