"""Freeze once: the frozen prefix's outputs, computed once and cached; and the metadata
statistics fusion models carry.

A phase whose first trainable layer comes after frozen backbone layers (and whose images
do not change between epochs) runs that frozen prefix once per image. Its outputs are
kept in memory when they fit in the memory budget (``data.caching``), else in a
.npy file under ``<output_dir>/cache/<experiment>/``, named by a key of the data, the
prefix's weights and the split, so that any change of those computes them again.

Feature maps (a cut inside the backbone) are kept in float16: half the memory, and a
relative rounding of at most 2**-11 (the suffix computes in its own precision). Maps
beyond float16's range (a random-init backbone can reach it) are kept in float32 instead.
Pooled features are kept in float32: they are small (one vector per image), and the
head trained on them then matches end-to-end training to float32 rounding.

A fusion head takes the metadata and boxes beside them, normalized with the training
split's statistics, which ``build_model`` stores in the model.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transferlab.config import Config
from transferlab.data import ImageDataset, Splits
from transferlab.data.caching import images_digest, memory_budget
from transferlab.data.pipeline import feature_dataset, make_tf_dataset
from transferlab.data.side import side_input_names
from transferlab.models.split import HEAD_CUT
from transferlab.progress import progress_bar, say
from transferlab.runs import write_with


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


@dataclass
class PrefixCache:
    """The frozen prefix's outputs for the train split's rows, then the val split's."""

    outputs: np.ndarray  # float16 or float32; an np.memmap when kept on disk
    key: str  # what they were computed from (data, prefix weights, split)
    where: str  # "memory" or the .npy file
    seconds: float  # computing (or opening) them


def cache_prefix(
    prefix: keras.Model, cut: str, dataset, splits, size: int, cfg: Config, phase: str
) -> PrefixCache:
    """Run ``prefix`` (ending at layer ``cut``) once over the train and val images.

    A cache file with the same key (an interrupted run's, or an earlier run's of the same
    data and prefix) is opened instead of computing again.
    """
    both = pd.concat([splits.train, splits.val])
    return cache_prefix_table(prefix, cut, dataset, both, size, cfg, phase)


def cache_prefix_table(
    prefix: keras.Model, cut: str, dataset, table: pd.DataFrame, size: int, cfg: Config, phase: str
) -> PrefixCache:
    """Run ``prefix`` (ending at layer ``cut``) once over ``table``'s images, in its order.

    ``phase`` names the progress bar and the cache file (one file per phase is kept).
    """
    started = time.perf_counter()
    key = cache_key(prefix, cut, dataset, table, size)
    dtype = np.float32 if cut == HEAD_CUT else np.float16
    try:
        outputs, where = store_prefix(prefix, cut, dataset, table, size, cfg, phase, key, dtype)
    except Float16Overflow:
        say(f"{phase}: {cut}'s outputs exceed float16's range; they are kept in float32")
        outputs, where = store_prefix(
            prefix, cut, dataset, table, size, cfg, phase, key, np.float32
        )
    return PrefixCache(outputs, key, where, time.perf_counter() - started)


class Float16Overflow(ValueError):
    """A prefix output beyond float16's range."""


def store_prefix(prefix, cut, dataset, table, size, cfg, phase, key, dtype):
    """The prefix outputs of ``table``'s images in memory or in a .npy file, and where."""
    shape = (len(table), *prefix.output.shape[1:])
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes <= memory_budget():
        outputs = np.empty(shape, dtype)
        run_prefix(prefix, dataset, table, size, cfg, phase, outputs)
        return outputs, "memory"
    folder = Path(cfg.output_dir) / "cache" / cfg.experiment
    path = folder / f"{phase}_{cut}_{np.dtype(dtype).name}_{key}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{phase}_*.npy"):
            old.unlink()  # another key: other data, weights or split; it would only fill the disk
        say(f"{phase}: {nbytes / 2**30:.1f} GiB of prefix outputs go to {path}")

        def write(tmp):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            run_prefix(prefix, dataset, table, size, cfg, phase, out)
            out.flush()
            del out

        write_with(path, write, durable=True)
    return np.load(path, mmap_mode="r"), str(path)


def run_prefix(prefix, dataset, table, size, cfg, phase, out: np.ndarray) -> None:
    """``prefix``'s outputs for ``table``'s images, written into ``out`` (in its dtype).

    Raises ``Float16Overflow`` when ``out`` is float16 and an output is beyond its range.
    """
    batch = cfg.train.batch_size
    images = make_tf_dataset(dataset, table, batch, size, side_names=side_input_names(cfg))
    # Full batches only (the last wraps round to the first images): the prefix is traced
    # once per batch shape, and on a small dataset a trace costs more than the pass.
    full_batches = math.ceil(len(table) / batch) * batch
    images = images.unbatch().repeat().take(full_batches).batch(batch)
    bar = progress_bar(len(table), f"{phase}: frozen prefix, computed once")
    start = 0
    # NumPy batches: predict_on_batch under the JAX backend takes no TensorFlow tensors.
    for inputs, _ in images.as_numpy_iterator():
        rows = min(batch, len(table) - start)
        values = np.asarray(prefix.predict_on_batch(inputs))[:rows]
        if out.dtype == np.float16 and np.abs(values).max() > np.finfo(np.float16).max:
            bar.close()
            raise Float16Overflow(f"{phase}: a frozen output of {np.abs(values).max():.3g}")
        out[start : start + rows] = values
        start += rows
        bar.update(rows)
    bar.close()


def cache_key(prefix: keras.Model, cut: str, dataset, table: pd.DataFrame, size: int) -> str:
    """A hash of what the prefix outputs depend on: its weights and precision, the images
    (files' sizes and times, or in-memory pixels), the split's samples in order, the size."""
    digest = hashlib.sha1()
    digest.update(f"{cut}|{prefix.compute_dtype}|{size}".encode())
    for weight in prefix.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    rows = dataset.rows(table["sample_id"])
    columns = [c for c in ("sample_id", "path", "label") if c in dataset.table]
    digest.update(dataset.table[columns].iloc[rows].to_csv(index=False).encode())
    digest.update(images_digest(dataset, rows).encode())
    return digest.hexdigest()[:16]


def cached_datasets(
    cache: PrefixCache, dataset, splits, batch, num_classes, cfg, epochs, drop_remainder=False
):
    """Training batches (for ``epochs`` (first, end)) and validation batches of the cache.

    Batched and shuffled exactly as the images would be (same seed, same order): the
    batches carry row numbers, which become the cached outputs as the batch is read.
    """
    outputs = cache.outputs
    cut = len(splits.train)
    index = np.arange(cut + len(splits.val))

    def rows_of(numbers):
        dtype = tf.as_dtype(outputs.dtype)
        rows = tf.numpy_function(lambda i: np.asarray(outputs[i]), [numbers], dtype)
        rows.set_shape((None, *outputs.shape[1:]))
        return tf.cast(rows, tf.float32)

    def look_up(inputs, labels):
        if isinstance(inputs, dict):
            return {**inputs, "features": rows_of(inputs["features"])}, labels
        return rows_of(inputs), labels

    train = feature_dataset(
        index[:cut], dataset, splits.train, batch, num_classes, cfg, epochs, drop_remainder
    )
    val = feature_dataset(index[cut:], dataset, splits.val, batch, num_classes, cfg)
    return (
        train.map(look_up, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE),
        val.map(look_up).prefetch(tf.data.AUTOTUNE),
    )
