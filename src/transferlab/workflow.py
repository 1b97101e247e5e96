"""Stage functions that make, the notebooks and the demo call with a resolved Config."""

from __future__ import annotations

from transferlab.config import Config
from transferlab.data import load_dataset
from transferlab.splits import prepare_splits


def prepare_data(cfg: Config) -> str:
    """Load the dataset, make (or reuse) its splits and audit them."""
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "test"))
    return f"{dataset.name}: {dataset.num_classes} classes; {sizes}; splits in {splits.directory}"
