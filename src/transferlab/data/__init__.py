"""Data: sources, the one image reader, side inputs, splits and tf.data pipelines.

Every source returns an ``ImageDataset``: a table with one row per sample
(sample_id, path, label, group, fixed_split), the class names, and, for small
datasets (CIFAR-10, digits), the uint8 pixels in memory. File datasets keep only
paths, so memory stays flat as a folder grows; pixels are read when needed, always
through ``read_image``.
"""

from __future__ import annotations

from transferlab.config import Config
from transferlab.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from transferlab.data.core import SPLIT_NAMES, DataError
from transferlab.data.dataset import ImageDataset, take_subset
from transferlab.data.digits import load_digits
from transferlab.data.files import load_csv, load_folder
from transferlab.data.health.corrections import apply_corrections, read_corrections
from transferlab.data.images import IMAGE_SUFFIXES, read_image, resize_pixels
from transferlab.data.splits import Splits, prepare_splits

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_SUFFIXES",
    "SPLIT_NAMES",
    "DataError",
    "ImageDataset",
    "Splits",
    "load_dataset",
    "prepare_splits",
    "read_image",
    "resize_pixels",
]

SOURCES = {
    "cifar10": load_cifar10,
    "folder": load_folder,
    "csv": load_csv,
    "digits": load_digits,
}


def load_dataset(cfg: Config) -> ImageDataset:
    """Load the dataset the config names (``data.kind``), with ``data.corrections`` applied."""
    dataset = SOURCES[cfg.data.kind](cfg)
    dataset.name = cfg.dataset_name
    # Checked against every image, applied after the subset, so the subset stays the same.
    corrections = read_corrections(cfg.data.corrections, dataset) if cfg.data.corrections else None
    if cfg.data.subset_per_class:
        dataset = take_subset(dataset, cfg.data.subset_per_class, cfg.seed)
    if corrections is not None:
        dataset = apply_corrections(dataset, corrections)
    return dataset


def prepare_data(cfg: Config) -> str:
    """The prepare-data stage: load the dataset, make (or reuse) its splits and audit them."""
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in SPLIT_NAMES)
    return f"{dataset.name}: {dataset.num_classes} classes; {sizes}; splits in {splits.directory}"
