"""tf.data input pipelines: uint8 images in, batched and prefetched, shuffled for training only.

Pixels come from the one image reader (``read_image``, ``resize_pixels``), run inside
the pipeline, so training, validation and evaluation feed a model the same pixels. A
file's pixels are decoded on its first pass and kept (``data.decoded``): later epochs and
evaluation passes decode nothing.
Images stay uint8 until the model: resizing to the backbone's size and its own
preprocessing are layers inside the model, so a saved model takes raw pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import tensorflow as tf

from transferlab.config import Config
from transferlab.data.dataset import ImageDataset
from transferlab.data.decoded import DecodedImages, decoded_images
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
    epochs: tuple[int, int] | None = None,
    seed: int = 0,
    side_names: tuple[str, ...] | list[str] = (),
    drop_remainder: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """Batches of (uint8 images, int labels) for one split table.

    ``epochs=None``: one pass in the split's order (validation, evaluation).
    ``epochs=(first, end)``: training's batches for epochs first..end-1, each epoch in
    its own order drawn from (seed, epoch), so a run resumed at epoch k sees what an
    uninterrupted run saw from epoch k on. Fit it with ``steps_per_epoch``.

    With ``side_names`` ("metadata", "boxes", "box_mask") each element's input is a dict
    of those arrays plus "image", as fusion and ROI models take it.

    ``shard=(index, count)``: training's batches of process ``index`` of ``count``, each
    its 1/count share of every full batch, read by this process alone.
    """
    if split.empty:
        raise ValueError("this split holds no images; check data.splits or the split CSVs")
    rows = dataset.rows(split["sample_id"])
    labels = dataset.table["label"].to_numpy()[rows].astype(np.int32)
    side = side_arrays(dataset, rows, side_names)
    if dataset.in_memory:
        images = dataset.images[rows]
        read = None
        if images.shape[1:3] != (input_size, input_size):
            read = on_image(lambda x: resize_in_graph(x, input_size), bool(side))
    else:
        # Row numbers, not pixels, are shuffled and sliced: pixels are read batch by batch,
        # decoded on their first pass and taken from the cache on every later one.
        cache = decoded_images(dataset, input_size)
        if cache is None:
            images = dataset.table["path"].to_numpy().astype(str)[rows]
            read = on_image(lambda path: decode_file(path, input_size), bool(side))
        else:
            images = rows.astype(np.int64)
            read = on_image(lambda row: cached_image(cache, row), bool(side))
    columns = ({"image": images, **side} if side else images, labels)
    if epochs is None:
        ds = tf.data.Dataset.from_tensor_slices(columns)
        if read:
            ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return epoch_batches(columns, batch_size, seed, epochs, read, drop_remainder, shard)


def on_image(fn, has_side: bool):
    """Apply ``fn`` to the image of an (inputs, label) pair, alone or in the inputs dict."""
    if has_side:
        return lambda x, y: ({**x, "image": fn(x["image"])}, y)
    return lambda x, y: (fn(x), y)


def epoch_batches(
    columns,
    batch_size: int,
    seed: int,
    epochs: tuple[int, int],
    prepare=None,
    drop_remainder=False,
    shard: tuple[int, int] = (0, 1),
):
    """Batches of each epoch in ``range(*epochs)``, in an order drawn from (seed, epoch).

    Batches never straddle two epochs, so ``ceil(count / batch_size)`` steps are one epoch
    (``count // batch_size`` with ``drop_remainder``). With ``shard=(index, processes)``
    every batch is full and this process gets the index-th of its ``processes`` equal
    slices: together the processes' k-th batches are the one-process run's k-th batch.
    """
    columns = tf.nest.map_structure(tf.constant, columns)
    count = int(tf.nest.flatten(columns)[0].shape[0])
    index, processes = shard
    if processes > 1:
        check_shard(count, batch_size, processes)
        drop_remainder = True

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        size = batch_size
        if processes > 1:
            # Slice before any image is read: a process decodes only its own share.
            size = batch_size // processes
            steps = count // batch_size
            order = tf.reshape(order[: steps * batch_size], (steps, processes, size))
            order = tf.reshape(order[:, index], (-1,))
        ds = tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: tf.nest.map_structure(lambda column: tf.gather(column, i), columns)
        )
        if prepare:
            ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(size, drop_remainder=drop_remainder)

    return tf.data.Dataset.range(*epochs).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def check_shard(count: int, batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise ValueError(
            f"a batch of {batch_size} does not split evenly over {processes} processes: "
            f"choose a train.batch_size that is a multiple of {processes}"
        )
    if count < batch_size:
        raise ValueError(
            f"{count} training image(s) fill no batch of {batch_size}: lower train.batch_size"
        )


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


def cached_image(cache: DecodedImages, row: tf.Tensor) -> tf.Tensor:
    """``cache.get(row)`` as a tf.data step: uint8 (size, size, 3), decoded on first use."""
    image = tf.numpy_function(cache.get, [row], tf.uint8, stateful=False)
    image.set_shape(cache.shape)
    return image


def resize_in_graph(pixels: tf.Tensor, size: int) -> tf.Tensor:
    """``resize_pixels(pixels, size)`` as a tf.data step."""
    image = tf.numpy_function(lambda x: resize_pixels(x, size), [pixels], tf.uint8, stateful=False)
    image.set_shape((size, size, 3))
    return image


def batches_for_replicas(
    ds: tf.data.Dataset, count: int, batch_size: int, replicas: int
) -> tf.data.Dataset:
    """Re-batch ``count`` elements so that every replica gets a share of every batch.

    A MirroredStrategy splits each batch across its replicas, and a batch smaller than
    the replica count leaves one with nothing, which Keras's step cannot take. Batches
    are multiples of ``replicas``; the remainder joins the last ones, split so that the
    first batch (Keras builds the metrics from it) still divides evenly. No element is
    dropped, so the metrics are those of one device on the same data.
    """
    if count < replicas:
        raise ValueError(
            f"{count} image(s) cannot be shared by {replicas} replicas: give the split at "
            f"least {replicas} images, or train on fewer devices"
        )
    size = max(replicas, min(batch_size, count) // replicas * replicas)
    remainder = count % size
    if remainder == 0 or remainder >= replicas:
        return with_batch_count(ds.unbatch().batch(size), math.ceil(count / size))
    # The last full batch and the remainder become two batches of at least `replicas`
    # (one when that is all there is).
    tail = size + remainder
    head = count - tail
    first = (tail - replicas) // replicas * replicas if head == 0 else 0
    elements = ds.unbatch()
    parts = [elements.take(head).batch(size)] if head else []
    if first:
        parts.append(elements.take(first).batch(first))
    parts.append(elements.skip(head + first).batch(tail - first))
    combined = parts[0]
    for part in parts[1:]:
        combined = combined.concatenate(part)
    return with_batch_count(combined, head // size + (1 if first else 0) + 1)


def with_batch_count(ds: tf.data.Dataset, batches: int) -> tf.data.Dataset:
    """``ds``, telling tf.data (and so Keras) that it holds ``batches`` batches.

    ``unbatch`` leaves the count unknown; Keras's JAX trainer then reads until the data
    runs out and warns "Your input ran out of data" at every validation pass.
    """
    counted = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return counted.prefetch(tf.data.AUTOTUNE)


def labels_of(dataset: ImageDataset, split: pd.DataFrame) -> np.ndarray:
    return dataset.table["label"].to_numpy()[dataset.rows(split["sample_id"])]


def feature_dataset(
    features, dataset, split, batch, num_classes, cfg, epochs=None, drop_remainder=False
) -> tf.data.Dataset:
    """One split's features and labels, batched (and, given ``epochs``, shuffled) like its images.

    A fusion head takes its metadata and boxes beside the features, as the full model does.
    """
    labels = np.eye(num_classes, dtype=np.float32)[labels_of(dataset, split)]
    inputs = features
    if cfg.model.inputs == "fusion":
        names = side_input_names(cfg)
        inputs = {
            "features": features,
            **side_arrays(dataset, dataset.rows(split["sample_id"]), names),
        }
    if epochs is None:
        ds = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch)
        return ds.prefetch(tf.data.AUTOTUNE)
    # Same count, seed and epochs as make_tf_dataset: the same order as the images.
    return epoch_batches((inputs, labels), batch, cfg.seed, epochs, None, drop_remainder)
