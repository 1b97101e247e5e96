"""tf.data input pipelines: uint8 images in, batched and prefetched, shuffled for training only.

Pixels come from the one image reader (``read_image``, ``resize_pixels``), run inside
the pipeline, so training, validation and evaluation feed a model the same pixels.
Images stay uint8 until the model: resizing to the backbone's size and its own
preprocessing are layers inside the model, so a saved model takes raw pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from transferlab.config import Config
from transferlab.data.dataset import ImageDataset
from transferlab.data.images import read_image, resize_pixels
from transferlab.data.side import side_input_names


def input_size_for(cfg: Config, dataset: ImageDataset) -> int:
    """Side of the square uint8 images the pipeline feeds the model."""
    if cfg.data.input_size:
        return cfg.data.input_size
    if dataset.in_memory:
        return int(dataset.images.shape[1])
    return cfg.model.image_size


def make_tf_dataset(
    dataset: ImageDataset,
    split: pd.DataFrame,
    batch_size: int,
    input_size: int,
    training: bool = False,
    seed: int = 0,
    side_names: tuple[str, ...] | list[str] = (),
) -> tf.data.Dataset:
    """Batches of (uint8 images, int labels) for one split table.

    With ``side_names`` ("metadata", "boxes", "box_mask") each element's input is a dict
    of those arrays plus "image", as fusion and ROI models take it.
    """
    if split.empty:
        raise ValueError("this split holds no images; check data.splits or the split CSVs")
    rows = dataset.rows(split["sample_id"])
    labels = dataset.table["label"].to_numpy()[rows].astype(np.int32)
    side = side_arrays(dataset, rows, side_names)

    def on_image(fn):
        # Apply ``fn`` to the image, whether it stands alone or sits in the inputs dict.
        if side:
            return lambda x, y: ({**x, "image": fn(x["image"])}, y)
        return lambda x, y: (fn(x), y)

    if dataset.in_memory:
        images = dataset.images[rows]
        ds = tf.data.Dataset.from_tensor_slices(
            ({"image": images, **side} if side else images, labels)
        )
        if images.shape[1:3] != (input_size, input_size):
            ds = ds.map(on_image(lambda x: resize_in_graph(x, input_size)), tf.data.AUTOTUNE)
    else:
        paths = dataset.table["path"].to_numpy()[rows].astype(str)
        ds = tf.data.Dataset.from_tensor_slices(
            ({"image": paths, **side} if side else paths, labels)
        )
    if training:
        # Shuffle paths or pixels before decoding: the buffer then holds the whole split cheaply.
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    if not dataset.in_memory:
        ds = ds.map(
            on_image(lambda path: decode_file(path, input_size)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not training,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def side_arrays(dataset: ImageDataset, rows: np.ndarray, names) -> dict[str, np.ndarray]:
    """The named side inputs (metadata, boxes, box_mask) of the given rows."""
    if not names:
        return {}
    found = dataset.side.arrays(rows) if dataset.side is not None else {}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(
            f"the model takes input(s) {missing} but the {dataset.name} dataset has none; "
            "set data.metadata_columns / data.boxes_column (a CSV dataset)"
        )
    return {n: found[n] for n in names}


def decode_file(path: tf.Tensor, size: int) -> tf.Tensor:
    """``read_image(path, size)`` as a tf.data step: uint8 (size, size, 3)."""
    image = tf.numpy_function(
        lambda p: read_image(p.decode(), size), [path], tf.uint8, stateful=False
    )
    image.set_shape((size, size, 3))
    return image


def resize_in_graph(pixels: tf.Tensor, size: int) -> tf.Tensor:
    """``resize_pixels(pixels, size)`` as a tf.data step."""
    image = tf.numpy_function(lambda x: resize_pixels(x, size), [pixels], tf.uint8, stateful=False)
    image.set_shape((size, size, 3))
    return image


def labels_of(dataset: ImageDataset, split: pd.DataFrame) -> np.ndarray:
    return dataset.table["label"].to_numpy()[dataset.rows(split["sample_id"])]


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
