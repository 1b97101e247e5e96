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


def list_files(folder: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file below ``folder``, sorted by path.

    One ``stat`` per file and plain strings: a folder of tens of thousands of files is
    listed in well under a second.
    """
    found, pending = [], [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    stat = entry.stat()
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def stat_files(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each path; size -1 for a path that is not a file."""
    found = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append((path, -1, 0))
            continue
        found.append(
            (path, stat.st_size, stat.st_mtime_ns) if os.path.isfile(path) else (path, -1, 0)
        )
    return found


def scan_files(files: list[tuple[str, int, int]], cache: Path) -> dict[str, str | None]:
    """``{path: problem or None}`` for (path, size, mtime_ns) rows; only unseen or changed
    files are decoded.

    A row with size -1 gets the problem "file does not exist". ``cache`` is read when
    present and rewritten when anything changed.
    """
    known = read_scan(cache)
    rows, to_check = {}, []
    for path, size, mtime in files:
        if size < 0:
            rows[path] = (size, mtime, "file does not exist")
            continue
        seen = known.get(path)
        if seen is not None and seen[:2] == (size, mtime):
            rows[path] = seen
        else:
            rows[path] = (size, mtime, None)
            to_check.append(path)
    # Pillow releases the GIL while it decodes: threads check files in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for path, problem in zip(
            to_check, pool.map(image_problem, map(Path, to_check)), strict=True
        ):
            size, mtime, _ = rows[path]
            rows[path] = (size, mtime, problem)
    if to_check or rows.keys() != known.keys():
        write_scan(cache, rows)
    return {path: problem for path, (_, _, problem) in rows.items()}


def read_scan(cache: Path) -> dict[str, tuple[int, int, str | None]]:
    if not cache.is_file():
        return {}
    try:
        frame = pd.read_csv(cache, dtype={"path": str, "problem": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # a damaged cache only costs a fresh scan
    if list(frame.columns) != SCAN_COLUMNS:
        return {}
    columns = [frame[c].tolist() for c in SCAN_COLUMNS]
    return {
        path: (int(size), int(mtime), problem or None)
        for path, size, mtime, problem in zip(*columns, strict=True)
    }


def write_scan(cache: Path, rows: dict[str, tuple[int, int, str | None]]) -> None:
    frame = pd.DataFrame(
        [(path, size, mtime, problem or "") for path, (size, mtime, problem) in rows.items()],
        columns=SCAN_COLUMNS,
    )
    write_text(cache, frame.to_csv(index=False))
