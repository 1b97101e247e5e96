"""Small markdown helpers; every number goes through ``num`` so reports format alike."""

from __future__ import annotations

import math
import numbers
import shutil
from pathlib import Path
from typing import Any


def num(value: Any) -> str:
    """A number as reports show it: ints as ints, floats with 4 decimals, tiny ones as 1.00e-04."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4f}"


def seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f} s"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; cells that are not strings go through ``num``."""
    cells = [[c if isinstance(c, str) else num(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def bullets(items: list[str], empty: str = "_none recorded_") -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty


def copy_figure(source: Path, folder: Path, name: str) -> Path:
    """Copy a figure beside the report so it stays whole when outputs/ is gone."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(source, target)
    return target


def link(path: Path, start: Path) -> str:
    """A relative link from the report's folder, with forward slashes."""
    return Path(path).relative_to(start).as_posix()
