"""Atomic file writes and JSON reading: a crash never leaves half a file.

Every stage reads what the stage before it wrote, so each file is written to a
temporary name first and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = "", durable: bool = False):
    """Yield a temporary path beside ``path``; rename it into place if the block succeeds.

    ``durable``: flush the file and its folder to disk, so that after a power cut or a
    kill the new file is there whole or the old one is (checkpoints need this).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_file(path, suffix or path.suffix)
    try:
        yield Path(tmp)
        if durable:
            sync_file(tmp)
        os.replace(tmp, path)
        if durable:
            sync_file(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def temporary_file(path: Path, suffix: str) -> str:
    """Create an empty, unique file beside ``path``, with the mode open() would give it.

    (tempfile.mkstemp would make it private, 0600, and a model saved through it too.)
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def remove_temporaries(folder: str | Path, prefix: str) -> list[Path]:
    """Delete the temporaries ``temporary_file`` left for files named ``prefix...``.

    ``atomic_path`` removes its temporary however the block ends, except when the
    process is killed (SIGKILL, a lost machine) mid-write: then a hidden
    ``.<name>.<hex><suffix>`` file, hundreds of MB for a checkpoint, stays. Call this
    only while no other process can be writing those files (e.g. under the phase lock).
    """
    pattern = re.compile(rf"\.{re.escape(prefix)}.*\.[0-9a-f]{{8}}(\.\w+)?")
    folder = Path(folder)
    stale = [p for p in folder.glob(f".{prefix}*") if pattern.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def sync_file(path: str | Path) -> None:
    """fsync a file or a folder (a folder's entry for a renamed file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); delete it and re-run its stage"
        ) from None


def write_with(path: str | Path, writer: Callable[[Path], Any], durable: bool = False) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, durable=durable) as tmp:
        writer(tmp)
    return Path(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
