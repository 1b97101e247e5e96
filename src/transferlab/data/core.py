"""The dataset record, image reading for every mode, and helpers the loaders share."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from transferlab.inputs import SideInputs


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


SPLIT_NAMES = ("train", "val", "test")


class DataError(ValueError):
    """Data that cannot be used as it is; the message says what to change."""


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
                images = np.stack([resize_image(im, size) for im in images])
            return images
        paths = self.table["path"].to_numpy()[rows]
        return np.stack(
            [resize_image(read_image(p), size) if size else read_image(p) for p in paths]
        )


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file as RGB uint8 (H, W, 3): grayscale, RGBA, palette, 16-bit."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_uint8(image)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit) grey: scale to 0..255 rather than clip.
        pixels = np.asarray(image, dtype=np.float64)
        maximum = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        grey = np.clip(pixels / maximum * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    # Alpha is dropped, not composited, to match tf.io.decode_image in the input pipeline.
    return np.asarray(image.convert("RGB"))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def check_image_file(path: Path) -> str | None:
    """Return why ``path`` is not a usable image, or None when it is."""
    try:
        with Image.open(path) as image:
            # draft() lets JPEGs decode at reduced scale: a fast full read that still
            # catches truncated files.
            image.draft("RGB", (64, 64))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    return None


def file_problem(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'}; use jpg, jpeg, png or bmp)"
    return check_image_file(path)


def existing_dir(data_dir: str | None) -> Path:
    if not data_dir:
        raise DataError("data.data_dir is not set; point it at your image folder")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data.data_dir={root} does not exist or is not a folder")
    return root


def report_skipped(skipped: list[dict]) -> None:
    if skipped:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        warnings.warn(
            f"skipped {len(skipped)} file(s), listed in skipped.csv in the splits folder: "
            f"{examples}",
            stacklevel=3,
        )


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
    return ImageDataset(dataset.name, dataset.class_names, subset, images, dataset.skipped, side)
