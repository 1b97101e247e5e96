"""Phase 1's feature cache, and the metadata statistics fusion models carry.

The feature-cached phase 1 trains the head on pooled backbone features; a fusion head
takes the metadata and boxes beside them, normalized with the training split's
statistics, which ``build_model`` stores in the model.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data import ImageDataset, Splits
from transferlab.data.pipeline import feature_dataset, make_tf_dataset
from transferlab.data.side import side_input_names
from transferlab.progress import PredictProgress


def metadata_stats(cfg: Config, dataset: ImageDataset, splits: Splits) -> dict | None:
    """Mean and variance of each metadata column over the training split (missing left out)."""
    if "metadata" not in side_input_names(cfg):
        return None
    values = dataset.side.metadata[dataset.rows(splits.train["sample_id"])]
    return column_stats(values, cfg.data.metadata_columns)


def column_stats(values: np.ndarray, columns: list[str]) -> dict:
    """Mean and variance per column of training rows' metadata (missing values left out).

    A column with one value throughout gets variance 1, so it is only centred, and a
    warning: scaled by its zero spread, any other value at prediction time would be
    enormous.
    """
    if np.isnan(values).all(axis=0).any():
        empty = np.array(columns)[np.isnan(values).all(axis=0)].tolist()
        raise ValueError(f"metadata column(s) {empty} have no value in the training split")
    mean = np.nanmean(values, axis=0)
    variance = np.nanvar(values, axis=0)
    constant = np.flatnonzero(np.nanmin(values, axis=0) == np.nanmax(values, axis=0))
    if constant.size:
        named = [f"{columns[j]!r} (always {mean[j]:g})" for j in constant]
        warnings.warn(
            f"metadata column(s) {', '.join(named)} hold one value in the training split: "
            "they are normalized with scale 1 (only centred), so other values stay in range, "
            "but they teach the model nothing; consider leaving them out of "
            "data.metadata_columns",
            stacklevel=3,
        )
        variance[constant] = 1.0
    return {"mean": mean.tolist(), "variance": variance.tolist()}


def stats_of(model: keras.Model) -> dict | None:
    """The metadata statistics a fusion model carries (they are fixed at build time)."""
    names = {layer.name for layer in model.layers}
    if "meta_norm" not in names:
        return None
    layer = model.get_layer("meta_norm")
    return {"mean": layer.mean, "variance": layer.variance}


def feature_datasets(
    extractor, dataset, splits, size, batch, num_classes, cfg, epochs, drop_remainder=False
):
    """Pooled backbone features of the train and val splits, computed once.

    Returns the train feature batches for ``epochs`` (first, end), the val feature
    batches, and a checksum of the features, which a resumed run compares to be sure
    its backbone is the interrupted run's.
    """
    names = side_input_names(cfg)
    both = pd.concat([splits.train, splits.val])
    images = make_tf_dataset(dataset, both, batch, size, side_names=names)
    # One predict call over full batches only (the last wraps round to the first images):
    # predict traces the backbone once per batch shape, and on a small dataset a trace
    # costs more than computing the features.
    full_batches = math.ceil(len(both) / batch) * batch
    images = images.unbatch().repeat().take(full_batches).batch(batch)
    watch = PredictProgress(full_batches, "phase1: backbone features, computed once")
    features = extractor.predict(images, verbose=0, callbacks=[watch])
    features = features.astype(np.float32)[: len(both)]
    cut = len(splits.train)
    return (
        feature_dataset(
            features[:cut], dataset, splits.train, batch, num_classes, cfg, epochs, drop_remainder
        ),
        feature_dataset(features[cut:], dataset, splits.val, batch, num_classes, cfg),
        float(np.abs(features).sum(dtype=np.float64)),
    )
