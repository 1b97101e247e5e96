"""The dataset record every loader returns, and the per-class subset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from transferlab.data.core import DataError
from transferlab.data.images import read_image, resize_pixels

if TYPE_CHECKING:
    from transferlab.data.side import SideInputs


@dataclass
class ImageDataset:
    name: str
    class_names: list[str]
    # Columns: sample_id, path (files only), label (int), group, fixed_split ("" if free).
    table: pd.DataFrame
    # uint8 (N, H, W, 3), row-aligned with ``table``; None for file datasets.
    images: np.ndarray | None = None
    # Files left out while scanning, as {"path": ..., "reason": ...}.
    skipped: list[dict] = field(default_factory=list)
    # Metadata and boxes of CSV datasets that name them (data.metadata_columns, boxes_column).
    side: SideInputs | None = None
    # The data.corrections applied at load (a data.health.corrections.Corrections), if
    # any; typed loosely because that module builds datasets (no import cycle).
    corrections: Any = None
    # Where a file dataset too large for memory keeps its decoded images (data.decoded).
    cache_dir: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def rows(self, sample_ids) -> np.ndarray:
        """Row positions of ``sample_ids`` in the table."""
        index = pd.Index(self.table["sample_id"])
        positions = index.get_indexer(list(sample_ids))
        if (positions < 0).any():
            missing = [s for s, p in zip(sample_ids, positions, strict=True) if p < 0][:5]
            raise DataError(
                f"split lists samples that the {self.name} dataset no longer has (e.g. {missing}); "
                "delete the splits folder to make new splits"
            )
        return positions

    def load_images(self, sample_ids, size: int | None = None) -> np.ndarray:
        """uint8 pixels of the given samples, resized to ``size`` if given."""
        rows = self.rows(sample_ids)
        if self.in_memory:
            images = self.images[rows]
            if size and images.shape[1:3] != (size, size):
                images = np.stack([resize_pixels(im, size) for im in images])
            return images
        paths = self.table["path"].to_numpy()[rows]
        return np.stack([read_image(p, size) for p in paths])


def take_subset(dataset: ImageDataset, per_class: int, seed: int) -> ImageDataset:
    """Keep at most ``per_class`` free (non-test) samples of each class; fixed test rows stay."""
    table = dataset.table
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(table), dtype=bool)
    keep[(table["fixed_split"] == "test").to_numpy()] = True
    pool = table["fixed_split"] != "test"
    for label in range(dataset.num_classes):
        rows = np.flatnonzero(pool & (table["label"] == label))
        keep[rng.permutation(rows)[:per_class]] = True
    rows = np.flatnonzero(keep)
    images = dataset.images[rows] if dataset.in_memory else None
    subset = table.iloc[rows].reset_index(drop=True)
    side = dataset.side.take(rows) if dataset.side else None
    return ImageDataset(
        dataset.name,
        dataset.class_names,
        subset,
        images,
        dataset.skipped,
        side,
        cache_dir=dataset.cache_dir,
    )
