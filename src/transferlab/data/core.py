"""What every data module shares: the error type, the split names, small checks."""

from __future__ import annotations

import warnings
from pathlib import Path

SPLIT_NAMES = ("train", "val", "test")


class DataError(ValueError):
    """Data that cannot be used as it is; the message says what to change."""


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
