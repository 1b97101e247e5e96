"""Test-time augmentation: the mean prediction over flipped and shifted copies, streamed.

Each copy is drawn inside the tf.data graph, per image: image ``i`` of batch ``b`` in
copy ``c`` gets its own flip and shift from the stateless seed (seed, c, b), so the same
seed gives the same copies, and images in one batch or in different batches differ.

For fusion and ROI models the boxes must follow the pixels, so their copies are
mirrored only, boxes mirrored with them; shifts would move the image off its boxes.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferlab.evaluation.inference import predict_dataset

# Shifts reach up to this fraction of the image's height and width, either way.
MAX_SHIFT = 0.1


def tta_probabilities(
    model, batches: tf.data.Dataset, images: int, passes: int, seed: int, plain=None
) -> np.ndarray:
    """Mean probabilities over the plain images and ``passes`` augmented copies.

    ``plain``: the plain images' probabilities when the caller has them already.

    ``batches`` yields (inputs, labels) as ``make_tf_dataset`` makes them; each copy is
    augmented in the input pipeline and predicted batch by batch, so memory does not
    grow with the split.
    """
    if plain is None:
        plain = predict_dataset(model, batches, images, "TTA: plain images")
    # All copies in one stream: one predict call and one traced augmentation for them all.
    copies = tf.data.Dataset.range(passes).flat_map(
        lambda copy: augmented_batches(batches, seed, copy)
    )
    count = int(batches.cardinality())
    if count >= 0:  # known: Keras then reads it to the end without an out-of-data warning
        copies = copies.apply(tf.data.experimental.assert_cardinality(count * passes))
    description = f"TTA: {passes} copies"
    predicted = predict_dataset(
        model, copies.prefetch(tf.data.AUTOTUNE), images * passes, description
    )
    total = plain + predicted.reshape(passes, images, -1).sum(axis=0)
    return total / (passes + 1)


def augmented_batches(batches: tf.data.Dataset, seed: int, copy) -> tf.data.Dataset:
    """``batches`` with every image replaced by its augmented copy number ``copy``.

    ``copy``: an int, or an int64 scalar tensor inside a tf.data function.
    """
    copy = tf.cast(copy, tf.int64)

    def augment(step, pair):
        inputs, labels = pair
        batch_seed = tf.stack([tf.constant(seed, tf.int64) * 1000 + copy, step])
        return augment_inputs(inputs, batch_seed), labels

    return batches.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)


def augment_inputs(inputs, batch_seed: tf.Tensor):
    """One batch's copy: images flipped and shifted, or (with boxes) mirrored with them.

    ``batch_seed``: a stateless seed (two integers) for this batch; every image in the
    batch gets its own draws from it.
    """
    if not isinstance(inputs, dict):
        return flip_and_shift(inputs, batch_seed)
    images = inputs["image"]
    count = tf.shape(images)[0]
    mirrored = tf.random.stateless_uniform([count], batch_seed) < 0.5
    copy = {**inputs, "image": tf.where(mirrored[:, None, None, None], images[:, :, ::-1], images)}
    if "boxes" in inputs:
        boxes = inputs["boxes"]
        # A real box (x, y, w, h) mirrors to x -> 1 - x - w; padding stays zero.
        turn = mirrored[:, None] & (inputs["box_mask"] > 0)
        x = tf.where(turn, 1.0 - boxes[..., 0] - boxes[..., 2], boxes[..., 0])
        copy["boxes"] = tf.concat([x[..., None], boxes[..., 1:]], axis=-1)
    return copy


def flip_and_shift(images: tf.Tensor, batch_seed: tf.Tensor) -> tf.Tensor:
    """Each image mirrored with probability 1/2 and shifted by up to ``MAX_SHIFT`` each way.

    One projective transform per image (bilinear, edges repeated as Keras's
    RandomTranslation with fill_mode="nearest" does); rounded back to the input's dtype.
    """
    shape = tf.shape(images)
    count = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    draws = tf.random.stateless_uniform([count, 3], batch_seed)
    mirrored = draws[:, 0] < 0.5
    shift_x = (draws[:, 1] * 2 - 1) * MAX_SHIFT * width
    shift_y = (draws[:, 2] * 2 - 1) * MAX_SHIFT * height
    # Output pixel (x, y) samples input (a0 x + a2, y + b2): a mirror then a shift.
    a0 = tf.where(mirrored, -1.0, 1.0)
    a2 = tf.where(mirrored, width - 1 + shift_x, -shift_x)
    zeros, ones = tf.zeros([count]), tf.ones([count])
    transforms = tf.stack([a0, zeros, a2, zeros, ones, -shift_y, zeros, zeros], axis=1)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    moved.set_shape(images.shape)  # the model's predict function keeps its traced shape
    if images.dtype.is_floating:
        return tf.cast(moved, images.dtype)
    return tf.cast(tf.clip_by_value(tf.round(moved), 0, images.dtype.max), images.dtype)
