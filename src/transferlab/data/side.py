"""Inputs besides pixels, read from a CSV dataset: numeric metadata columns and boxes.

Boxes are ``x, y, w, h`` (top-left corner, width, height) in pixels of the original
image or in units of its width and height (``data.box_units``), written either as
``"x,y,w,h; x,y,w,h"`` or as JSON ``[[x, y, w, h], ...]``; an empty cell means no box.
They are stored relative to the image (0..1), padded with zeros to ``data.max_boxes``,
with a mask that is 1 for real boxes. The model reads relative boxes, so they stay
valid through every resize of the image.

Anything that cannot be used as it is raises a ``DataError`` naming the CSV line;
anything fixed up (a box clipped to the image, extra boxes dropped, missing metadata)
is reported with a warning and listed in ``SideInputs.fixups``, never changed silently.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data.core import DataError
from transferlab.data.images import image_size

# Cell text read as a missing metadata value.
MISSING = ("", "na", "nan", "null", "none", "?")


@dataclass
class SideInputs:
    """Metadata and boxes, row-aligned with a dataset's table."""

    metadata_columns: list[str] = field(default_factory=list)
    # float32 (N, M); NaN where a value is missing (the model fills in the training mean).
    metadata: np.ndarray | None = None
    # float32 (N, max_boxes, 4) relative x, y, w, h and (N, max_boxes) 1/0 mask.
    boxes: np.ndarray | None = None
    box_mask: np.ndarray | None = None
    # What was fixed up while reading (clipped boxes, dropped boxes, missing values).
    fixups: list[str] = field(default_factory=list)

    def take(self, rows: np.ndarray) -> SideInputs:
        """The same inputs for the given row positions."""

        def pick(a):
            return None if a is None else a[rows]

        return SideInputs(
            self.metadata_columns,
            pick(self.metadata),
            pick(self.boxes),
            pick(self.box_mask),
            self.fixups,
        )

    def arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """{"metadata", "boxes", "box_mask"} (those present) for the given row positions."""
        part = self.take(rows)
        found = {"metadata": part.metadata, "boxes": part.boxes, "box_mask": part.box_mask}
        return {k: v for k, v in found.items() if v is not None}


def read_side_inputs(frame: pd.DataFrame, cfg: Config, lines: pd.Series) -> SideInputs:
    """Parse the metadata and box columns of ``frame`` (raw CSV text, one row per image).

    ``lines`` holds each row's CSV file and line, for error messages; the frame has a
    "path" column of image files (pixel boxes need each image's size).
    """
    side = SideInputs(list(cfg.data.metadata_columns))
    fixups = side.fixups
    if cfg.data.metadata_columns:
        side.metadata = parse_metadata(frame, cfg.data.metadata_columns, lines, fixups)
    if cfg.data.boxes_column:
        sizes = None
        if cfg.data.box_units == "pixels":
            sizes = [image_size(p) for p in frame["path"]]
        side.boxes, side.box_mask = parse_box_column(
            frame[cfg.data.boxes_column], sizes, cfg.data.max_boxes, lines, fixups
        )
    report_fixups(fixups)
    return side


def parse_metadata(
    frame: pd.DataFrame, columns: list[str], lines: pd.Series, fixups: list[str]
) -> np.ndarray:
    """Numeric metadata as float32 (N, M), NaN where missing; text is an error."""
    values = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        text = frame[column].astype(str).str.strip()
        missing = text.str.lower().isin(MISSING)
        numbers = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = numbers.isna() & ~missing
        if bad.any():
            examples = [f"{lines.iloc[i]}: {text.iloc[i]!r}" for i in np.flatnonzero(bad)[:3]]
            raise DataError(
                f"metadata column {column!r} holds text where numbers are needed "
                f"({int(bad.sum())} row(s), e.g. {'; '.join(examples)}); encode it as numbers "
                "(e.g. one 0/1 column per category) or leave it out of data.metadata_columns"
            )
        if missing.all():
            raise DataError(f"metadata column {column!r} has no values at all; leave it out")
        if missing.any():
            fixups.append(
                f"metadata column {column!r}: {int(missing.sum())} missing value(s) "
                f"(e.g. {lines.iloc[int(np.flatnonzero(missing)[0])]}) are filled with the "
                "training mean inside the model"
            )
        values[:, j] = numbers.to_numpy(dtype=np.float32)
    return values


def parse_box_column(
    cells: pd.Series,
    sizes: list[tuple[int, int]] | None,
    max_boxes: int,
    lines: pd.Series,
    fixups: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Relative, padded boxes (N, max_boxes, 4) and their mask (N, max_boxes)."""
    boxes = np.zeros((len(cells), max_boxes, 4), dtype=np.float32)
    mask = np.zeros((len(cells), max_boxes), dtype=np.float32)
    clipped, truncated = [], []
    for i, cell in enumerate(cells):
        where = lines.iloc[i]
        width, height = sizes[i] if sizes else (1.0, 1.0)
        found = []
        for box in parse_boxes(str(cell), where):
            fitted = fit_box(box, width, height, where)
            if fitted != box:
                clipped.append(where)
            x, y, w, h = fitted
            found.append((x / width, y / height, w / width, h / height))
        if len(found) > max_boxes:
            # Keep the largest: the part of the image most likely to matter.
            found = sorted(found, key=lambda b: b[2] * b[3], reverse=True)[:max_boxes]
            truncated.append(where)
        if found:
            boxes[i, : len(found)] = found
            mask[i, : len(found)] = 1.0
    if clipped:
        fixups.append(
            f"{len(clipped)} box(es) reach outside their image and were clipped to it "
            f"(e.g. {clipped[0]})"
        )
    if truncated:
        fixups.append(
            f"{len(truncated)} image(s) have more than data.max_boxes={max_boxes} boxes; the "
            f"{max_boxes} largest are kept (e.g. {truncated[0]}); raise data.max_boxes to keep all"
        )
    return boxes, mask


def parse_boxes(text: str, where: str = "") -> list[tuple[float, ...]]:
    """``"x,y,w,h; x,y,w,h"`` or ``"[[x, y, w, h], ...]"`` as a list of 4-tuples."""
    text = text.strip()
    if text.lower() in MISSING or text == "[]":
        return []
    try:
        if text.startswith("["):
            items = json.loads(text)
            if items and not isinstance(items[0], list):
                items = [items]  # one box written as [x, y, w, h]
        else:
            items = [re.split(r"[,\s]+", part.strip()) for part in text.split(";") if part.strip()]
        boxes = [tuple(float(v) for v in item) for item in items]
    except (ValueError, TypeError, json.JSONDecodeError):
        boxes = None
    if boxes is None or any(len(b) != 4 or not all(np.isfinite(b)) for b in boxes):
        raise DataError(
            f"{where}: cannot read boxes from {text!r}; write each box as x,y,w,h (numbers), "
            'boxes separated by ";", e.g. "10,20,30,40; 50,60,20,20" or [[10, 20, 30, 40]]'
        )
    return boxes


def fit_box(box: tuple[float, ...], width: float, height: float, where: str) -> tuple[float, ...]:
    """The box clipped to the image; an error when it has no size or lies wholly outside."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise DataError(
            f"{where}: box {list(box)} has width or height {min(w, h):g}; boxes are x,y,w,h "
            "with positive w and h (corner coordinates x1,y1,x2,y2 are not supported)"
        )
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        units = "pixels" if width > 1 or height > 1 else "relative units (0..1)"
        raise DataError(
            f"{where}: box {list(box)} lies outside its {width:g}x{height:g} image ({units}); "
            "check data.box_units (pixels or relative)"
        )
    return (x1, y1, x2 - x1, y2 - y1) if (x1, y1, x2, y2) != (x, y, x + w, y + h) else box


def report_fixups(fixups: list[str]) -> None:
    for message in fixups:
        warnings.warn(message, stacklevel=3)


def side_input_names(cfg: Config) -> list[str]:
    """Inputs besides "image" that ``model.inputs`` reads: metadata, boxes, box_mask."""
    mode, data = cfg.model.inputs, cfg.data
    names = []
    if mode == "fusion" and data.metadata_columns:
        names.append("metadata")
    if mode == "roi" or (mode == "fusion" and data.boxes_column):
        names += ["boxes", "box_mask"]
    return names
