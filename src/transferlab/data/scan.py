"""The folder scan, done once: which files the reader can use, and why not the others.

Checking a file means decoding it, which costs far more than listing it. The result
of each check is kept in ``scan.csv`` beside the splits (path, size, modification
time, problem), so a later stage, or a later run on a grown folder, decodes only the
files that are new or changed since.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from transferlab.data.images import image_problem
from transferlab.runs import write_text

SCAN_COLUMNS = ["path", "size", "mtime_ns", "problem"]


def scan_files(paths: list[Path], cache: Path) -> dict[str, str | None]:
    """``{path: problem or None}`` for every path; only unseen or changed files are decoded.

    A path that does not exist gets the problem "file does not exist". ``cache`` is read
    when present and rewritten when anything changed.
    """
    known = read_scan(cache)
    rows, to_check = {}, []
    for path in paths:
        key = str(path)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            rows[key] = (0, 0, "file does not exist")
            continue
        seen = known.get(key)
        if seen is not None and seen[:2] == (stat.st_size, stat.st_mtime_ns):
            rows[key] = seen
        else:
            rows[key] = (stat.st_size, stat.st_mtime_ns, None)
            to_check.append(path)
    # Pillow releases the GIL while it decodes: threads check files in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for path, problem in zip(to_check, pool.map(image_problem, to_check), strict=True):
            size, mtime, _ = rows[str(path)]
            rows[str(path)] = (size, mtime, problem)
    if to_check or set(rows) != set(known):
        write_scan(cache, rows)
    return {key: problem for key, (_, _, problem) in rows.items()}


def read_scan(cache: Path) -> dict[str, tuple[int, int, str | None]]:
    if not cache.is_file():
        return {}
    try:
        frame = pd.read_csv(cache, dtype={"path": str, "problem": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # a damaged cache only costs a fresh scan
    if list(frame.columns) != SCAN_COLUMNS:
        return {}
    return {
        path: (int(size), int(mtime), problem or None)
        for path, size, mtime, problem in frame.itertuples(index=False)
    }


def write_scan(cache: Path, rows: dict[str, tuple[int, int, str | None]]) -> None:
    frame = pd.DataFrame(
        [(path, size, mtime, problem or "") for path, (size, mtime, problem) in rows.items()],
        columns=SCAN_COLUMNS,
    )
    write_text(cache, frame.to_csv(index=False))
