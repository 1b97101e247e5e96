"""The corrections file (``data.corrections``): the user's decisions, applied at load.

One CSV, one row per image: ``path`` or ``sample_id`` (either column names the image),
``action`` (``drop``, ``relabel`` or ``keep``) and ``new_label`` (a class name, for
``relabel``). Other columns (the notebook writes finding, score, label) are ignored.
Dropped images leave the dataset, relabelled ones take their new label; nothing on
disk is deleted or moved. The whole file is checked before anything is applied: every
bad line is named in one error, and a file with any bad line changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from transferlab.data.core import DataError
from transferlab.data.dataset import ImageDataset

ACTIONS = ("drop", "relabel", "keep")
# The first CSV line is the header: data rows start at line 2.
FIRST_LINE = 2


@dataclass
class Corrections:
    """What a checked corrections file asks: sample ids to drop, ids to relabel (id -> class)."""

    file: str
    drop: list[str] = field(default_factory=list)
    relabel: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict:
        """What the split settings keep: which images left and which changed label."""
        return {"drop": sorted(self.drop), "relabel": dict(sorted(self.relabel.items()))}


def read_corrections(path: str | Path, dataset: ImageDataset) -> Corrections:
    """Read and check ``path`` against ``dataset`` (before any subset is taken).

    Raises ``DataError`` naming every bad line: an image the dataset does not have, an
    unknown action, a relabel without a known class.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"data.corrections={path} does not exist; write it from notebooks/09_data_health"
            ".ipynb (or make data-health's decisions.csv), or set data.corrections=null"
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip().lower() for c in frame.columns]
    if not {"path", "sample_id"} & set(frame.columns) or "action" not in frame:
        raise DataError(
            f"{path}: needs a column path or sample_id, and a column action "
            f"(found {', '.join(frame.columns) or 'no columns'})"
        )
    ids = sample_lookup(dataset)
    corrections, problems = Corrections(str(path)), []
    for offset, row in enumerate(frame.to_dict("records")):
        problem = add_row(corrections, row, ids, dataset.class_names)
        if problem:
            problems.append(f"line {FIRST_LINE + offset}: {problem}")
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise DataError(f"{path}: nothing was applied, fix these lines first: {shown}")
    return corrections


def sample_lookup(dataset: ImageDataset) -> dict[str, str]:
    """Every name an image can go by in the file (sample id, absolute path) -> its sample id."""
    table = dataset.table
    lookup = {str(s): str(s) for s in table["sample_id"]}
    if "path" in table:
        for sample_id, path in zip(table["sample_id"], table["path"], strict=True):
            if isinstance(path, str) and path:
                lookup[os.path.normpath(path)] = str(sample_id)
    return lookup


def add_row(corrections: Corrections, row: dict, ids: dict[str, str], classes: list[str]) -> str:
    """Add one CSV row to ``corrections``; return what is wrong with it, or ""."""
    name = (row.get("sample_id") or row.get("path") or "").strip()
    action = row.get("action", "").strip().lower()
    if not name:
        return "names no image (fill in path or sample_id)"
    sample_id = ids.get(name) or ids.get(os.path.normpath(name))
    if sample_id is None:
        return f"image {name!r} is not in the dataset (a missing file, or a typo in the path)"
    if action not in ACTIONS:
        return f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
    if action == "drop":
        corrections.drop.append(sample_id)
    elif action == "relabel":
        new_label = row.get("new_label", "").strip()
        if new_label not in classes:
            return (
                f"relabel {name!r} as unknown class {new_label!r}; the classes are "
                f"{', '.join(classes[:20])}"
            )
        corrections.relabel[sample_id] = new_label
    return ""


def apply_corrections(dataset: ImageDataset, corrections: Corrections) -> ImageDataset:
    """A copy of ``dataset`` without the dropped images and with the new labels.

    Images the file names that are not in ``dataset`` (left out by data.subset_per_class)
    are passed over.
    """
    table = dataset.table.copy()
    ids = table["sample_id"].astype(str)
    keep = ~ids.isin(set(corrections.drop)).to_numpy()
    new_labels = ids.map(corrections.relabel)
    changed = new_labels.notna().to_numpy()
    table.loc[changed, "label"] = [dataset.class_names.index(c) for c in new_labels[changed]]
    rows = keep.nonzero()[0]
    kept = table.iloc[rows].reset_index(drop=True)
    corrected = ImageDataset(
        dataset.name,
        dataset.class_names,
        kept,
        dataset.images[rows] if dataset.in_memory else None,
        dataset.skipped,
        dataset.side.take(rows) if dataset.side else None,
    )
    # Recorded: what this dataset's images actually underwent.
    present = set(ids)
    corrected.corrections = Corrections(
        corrections.file,
        [s for s in corrections.drop if s in present],
        {s: c for s, c in corrections.relabel.items() if s in present},
    )
    return corrected
