"""Phase 1's feature cache, and the metadata statistics fusion models carry.

The feature-cached phase 1 trains the head on pooled backbone features; a fusion head
takes the metadata and boxes beside them, normalized with the training split's
statistics, which ``build_model`` stores in the model.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transferlab.config import Config
from transferlab.data import ImageDataset
from transferlab.models import side_input_names
from transferlab.pipeline import labels_of, make_tf_dataset, side_arrays
from transferlab.splits import Splits


def metadata_stats(cfg: Config, dataset: ImageDataset, splits: Splits) -> dict | None:
    """Mean and variance of each metadata column over the training split (missing left out)."""
    if "metadata" not in side_input_names(cfg):
        return None
    values = dataset.side.metadata[dataset.rows(splits.train["sample_id"])]
    if np.isnan(values).all(axis=0).any():
        empty = np.array(cfg.data.metadata_columns)[np.isnan(values).all(axis=0)].tolist()
        raise ValueError(f"metadata column(s) {empty} have no value in the training split")
    return {
        "mean": np.nanmean(values, axis=0).tolist(),
        "variance": np.nanvar(values, axis=0).tolist(),
    }


def stats_of(model: keras.Model) -> dict | None:
    """The metadata statistics a fusion model carries (they are fixed at build time)."""
    names = {layer.name for layer in model.layers}
    if "meta_norm" not in names:
        return None
    layer = model.get_layer("meta_norm")
    return {"mean": layer.mean, "variance": layer.variance}


def feature_datasets(extractor, dataset, splits, size, batch, num_classes, seed, cfg):
    """Pooled backbone features of the train and val splits, computed once.

    Returns the train and val feature datasets and a checksum of the features, which a
    resumed run compares to be sure its backbone is the interrupted run's.
    """
    names = side_input_names(cfg)
    both = pd.concat([splits.train, splits.val])
    images = make_tf_dataset(dataset, both, batch, size, side_names=names)
    # One predict call over full batches only (the last wraps round to the first images):
    # predict traces the backbone once per batch shape, and on a small dataset a trace
    # costs more than computing the features.
    full_batches = math.ceil(len(both) / batch) * batch
    images = images.unbatch().repeat().take(full_batches).batch(batch)
    features = extractor.predict(images, verbose=0).astype(np.float32)[: len(both)]
    cut = len(splits.train)
    return (
        feature_dataset(features[:cut], dataset, splits.train, batch, num_classes, seed, cfg),
        feature_dataset(features[cut:], dataset, splits.val, batch, num_classes, None, cfg),
        float(np.abs(features).sum(dtype=np.float64)),
    )


def feature_dataset(features, dataset, split, batch, num_classes, seed, cfg) -> tf.data.Dataset:
    """One split's features and labels, batched (and shuffled) like its images were.

    A fusion head takes its metadata and boxes beside the features, as the full model does.
    """
    labels = tf.one_hot(labels_of(dataset, split), num_classes)
    inputs = features
    if cfg.model.inputs == "fusion":
        names = side_input_names(cfg)
        inputs = {
            "features": features,
            **side_arrays(dataset, dataset.rows(split["sample_id"]), names),
        }
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if seed is not None:
        # Same length, buffer and seed as make_tf_dataset: the same order as the images.
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)
