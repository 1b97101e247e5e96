"""The data-health page: grids of near-duplicate groups, likely label errors and outliers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from transferlab.data.dataset import ImageDataset

THUMB = 96
COLUMNS = 6


def plot_grid(
    dataset: ImageDataset, rows: pd.DataFrame, titles: list[str], path: Path, title: str
) -> Path:
    """A grid of ``rows``' images (sample_id column) with a title under each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = max(len(rows), 1)
    columns = min(COLUMNS, count)
    lines = (count + columns - 1) // columns
    # A Figure, not pyplot: no GUI backend or global state (as evaluation's figures).
    fig = Figure(figsize=(2.2 * columns, 2.5 * lines))
    axes = fig.subplots(lines, columns, squeeze=False)
    images = dataset.load_images(rows["sample_id"], THUMB) if len(rows) else []
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, text in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image)
        ax.set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def file_name(row) -> str:
    """The image's file name (its sample id for in-memory datasets), shortened."""
    name = Path(str(row.path)).name if getattr(row, "path", "") else str(row.sample_id)
    return name if len(name) <= 22 else name[:10] + "…" + name[-10:]


def duplicate_rows(groups: list[dict], shown: int) -> tuple[pd.DataFrame, list[str]]:
    """The first groups' images, group by group, with their titles."""
    records, titles = [], []
    for number, group in enumerate(groups, start=1):
        if len(records) + len(group["samples"]) > shown and records:
            break
        for sample in group["samples"]:
            records.append(sample)
            titles.append(
                f"group {number} · {sample['split']}\n{file_name(pd.Series(sample))}\n"
                f"{sample['label']} · sim {group['similarity']:.2f}"
            )
    return pd.DataFrame(records, columns=["sample_id", "path", "split", "label"]), titles


def write_cross_split_grid(
    dataset: ImageDataset, groups: list[dict], directory: Path, shown: int
) -> Path | None:
    """near_duplicates.png beside audit.json: the groups spanning splits, for the day
    checkpoint's Data finding (removed when none is left)."""
    path = directory / "near_duplicates.png"
    crossing = [g for g in groups if g["cross_split"]]
    if not crossing:
        path.unlink(missing_ok=True)
        return None
    rows, titles = duplicate_rows(crossing, shown)
    return plot_grid(dataset, rows, titles, path, "Near-duplicates across splits")


def issue_titles(issues: pd.DataFrame) -> list[str]:
    return [
        f"{file_name(r)}\ngiven {r.label} → {r.suggested}\nscore {r.score:.2f}"
        for r in issues.itertuples()
    ]


def outlier_titles(outliers: pd.DataFrame) -> list[str]:
    return [
        f"{file_name(r)}\n{r.label} · {r.split}\nscore {r.score:.3f}" for r in outliers.itertuples()
    ]
