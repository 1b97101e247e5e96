"""Datasets: CIFAR-10, a folder of class sub-folders, a CSV of paths, scikit-learn digits.

Every loader returns an ``ImageDataset``: a table with one row per sample
(sample_id, path, label, group, fixed_split), the class names, and, for small
datasets, the uint8 pixels in memory. File datasets keep only paths, so memory
stays flat as a folder grows; the input pipeline decodes them on the fly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from transferlab.data.core import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    DataError,
    ImageDataset,
    read_image,
    resize_image,
    take_subset,
)
from transferlab.data.files import load_csv, load_folder

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_SUFFIXES",
    "SPLIT_NAMES",
    "DataError",
    "ImageDataset",
    "load_dataset",
    "read_image",
    "resize_image",
]


def load_dataset(cfg: Config) -> ImageDataset:
    """Load the dataset the config names (``data.kind``)."""
    loaders = {
        "cifar10": load_cifar10,
        "folder": load_folder,
        "csv": load_csv,
        "digits": load_digits,
    }
    dataset = loaders[cfg.data.kind](cfg)
    dataset.name = cfg.dataset_name
    if cfg.data.subset_per_class:
        dataset = take_subset(dataset, cfg.data.subset_per_class, cfg.seed)
    return dataset


def load_digits(cfg: Config) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits as 8x8 RGB uint8: the offline demo dataset."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    grey = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    table = pd.DataFrame(
        {
            "sample_id": [f"digits:{i}" for i in range(len(images))],
            "path": "",
            "label": digits.target.astype(np.int64),
            "group": "",
            "fixed_split": "",
        }
    )
    return ImageDataset("digits", [str(c) for c in digits.target_names], table, images)
