"""What every cache of the data shares: a digest of the images and a memory budget.

Three caches are keyed on the images: the decoded pixels (``data.decoded``), the frozen
prefix's outputs for training (``training.features``) and the pooled backbone features
for sweeps, k-fold, the lr finder and data health (``experiments.features``). Each puts
``images_digest`` in its key, so an image replaced under the same name (a fixed bad
image) gives all three a new key, and each keeps in memory only what fits in
``memory_budget``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from transferlab.data.core import DataError
from transferlab.data.dataset import ImageDataset

# At most this share of the memory available now holds one process's caches; more goes
# to disk (or is not cached).
MEMORY_SHARE = 0.25


def images_digest(dataset: ImageDataset, rows=None) -> str:
    """A digest of ``dataset``'s images at ``rows`` (all when None), in that order.

    Files count by path, byte size and modification time (ns), so a replaced file is a
    new digest without reading it; in-memory images count by their pixels.
    """
    rows = np.arange(len(dataset.table)) if rows is None else np.asarray(rows)
    digest = hashlib.sha1()
    if dataset.in_memory:
        pixels = np.ascontiguousarray(dataset.images[rows])
        digest.update(f"{pixels.shape}\n".encode())
        digest.update(pixels.tobytes())
        return digest.hexdigest()
    for path in dataset.table["path"].to_numpy()[rows]:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DataError(
                f"image file {path} was listed when the dataset was loaded but is gone now; "
                "put it back or load the dataset again"
            ) from None
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def memory_budget() -> int:
    """Bytes a cache may keep in memory: ``MEMORY_SHARE`` of the memory available now."""
    return int(MEMORY_SHARE * available_memory())


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
