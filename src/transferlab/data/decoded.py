"""Decode once: a file dataset's images, decoded and resized, kept for every later pass.

The first pass over an image reads it with the one reader (``read_image``); every later
pass (training's epochs after the first, validation, evaluation, TTA, calibration) takes
the kept uint8 pixels. They are kept in memory when the dataset fits in the memory budget
(``data.caching``: a quarter of the memory available), else in a file under the dataset's
outputs (``outputs/splits/<dataset>/decoded/``), which later processes reuse. A cache is
keyed on every file's path, size and modification time and on the target size, so a
changed, added or removed file gives a new cache and the old one is deleted.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from transferlab.data.caching import images_digest, memory_budget
from transferlab.data.dataset import ImageDataset
from transferlab.data.images import read_image

# Memory caches of this process, most recently used last, keyed like the files.
MEMORY: OrderedDict[str, DecodedImages] = OrderedDict()
# Disk caches this process has open (one pair of file descriptors each).
DISK: dict[str, DecodedImages] = {}


def cache_key(dataset: ImageDataset, size: int) -> str:
    """A digest of every file's path, byte size and modification time, and the target size."""
    digest = hashlib.sha1(f"{size}\n".encode())
    digest.update(images_digest(dataset).encode())
    return digest.hexdigest()[:20]


class DecodedImages:
    """uint8 (size, size, 3) pixels of ``paths[i]``, read on first use, then kept.

    ``directory`` None keeps them in memory; else in ``<directory>/<size>px_<key>.u8``
    (the pixels) and ``.done`` (one byte per image, 1 once its pixels are written).
    """

    def __init__(self, paths, size: int, key: str, directory: Path | None = None):
        self.paths = list(paths)
        self.size = size
        self.key = key
        self.shape = (size, size, 3)
        self.row_bytes = size * size * 3
        count = len(self.paths)
        self.nbytes = count * self.row_bytes
        if directory is None:
            # np.zeros maps fresh pages lazily: memory grows with the images decoded so far.
            self.pixels = np.zeros((count, *self.shape), np.uint8)
            self.done = np.zeros(count, bool)
            return
        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / f"{size}px_{key}"
        for old in directory.glob(f"{size}px_*"):
            if not old.name.startswith(stem.name):
                old.unlink(missing_ok=True)  # the same data at this size, before a change
        self.pixels = None
        self.data_fd = os.open(f"{stem}.u8", os.O_RDWR | os.O_CREAT)
        self.done_fd = os.open(f"{stem}.done", os.O_RDWR | os.O_CREAT)
        os.ftruncate(self.data_fd, self.nbytes)  # sparse: no disk used until written
        os.ftruncate(self.done_fd, count)
        self.done = np.frombuffer(os.pread(self.done_fd, count, 0), np.uint8).astype(bool)

    def get(self, index: int) -> np.ndarray:
        """The pixels of image ``index``, decoded now only if no pass decoded them before."""
        index = int(index)
        if self.done[index]:
            if self.pixels is not None:
                return self.pixels[index]
            row = os.pread(self.data_fd, self.row_bytes, index * self.row_bytes)
            return np.frombuffer(row, np.uint8).reshape(self.shape)
        image = read_image(self.paths[index], self.size)
        if self.pixels is not None:
            self.pixels[index] = image
        else:
            os.pwrite(self.data_fd, image.tobytes(), index * self.row_bytes)
            # Marked after the pixels are written: a killed process leaves no false mark.
            os.pwrite(self.done_fd, b"\x01", index)
        self.done[index] = True
        return image


def decoded_images(dataset: ImageDataset, size: int) -> DecodedImages | None:
    """The cache of a file dataset's images at ``size``: this process's, in memory if it
    fits, else on disk under ``dataset.cache_dir``.

    None when it fits in neither (too large for memory and no ``cache_dir``): the
    pipeline then decodes on every pass, as without a cache.
    """
    paths = dataset.table["path"].to_numpy().astype(str)
    key = cache_key(dataset, size)
    if key in MEMORY:
        MEMORY.move_to_end(key)
        return MEMORY[key]
    if key in DISK:
        return DISK[key]
    nbytes = len(paths) * size * size * 3
    budget = memory_budget()
    if nbytes <= budget:
        cache = DecodedImages(paths, size, key)
        MEMORY[key] = cache
        # The least recently used caches make room: the process never holds over budget.
        while sum(c.nbytes for c in MEMORY.values()) > budget:
            MEMORY.popitem(last=False)
        return cache
    if dataset.cache_dir is None:
        return None
    DISK[key] = DecodedImages(paths, size, key, Path(dataset.cache_dir))
    return DISK[key]
