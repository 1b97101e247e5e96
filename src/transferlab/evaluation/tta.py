"""Test-time augmentation: the mean prediction over flipped and shifted copies, streamed.

For fusion and ROI models the boxes must follow the pixels, so their copies are
mirrored only, boxes mirrored with them; shifts would move the image off its boxes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from transferlab.evaluation.inference import predict_dataset
from transferlab.progress import progress_bar


def tta_probabilities(
    model, batches: tf.data.Dataset, images: int, passes: int, seed: int, plain=None
) -> np.ndarray:
    """Mean probabilities over the plain images and ``passes`` augmented copies.

    ``plain``: the plain images' probabilities when the caller has them already.

    ``batches`` yields (inputs, labels) as ``make_tf_dataset`` makes them; each batch is
    augmented and predicted in turn, so memory does not grow with the split.
    """
    if plain is None:
        plain = predict_dataset(model, batches, images, "TTA: plain images")
    total = plain.copy()
    for index in range(passes):
        augment = copy_maker(seed + 2 * index)
        parts = []
        with progress_bar(images, f"TTA: copy {index + 1} of {passes}") as bar:
            for inputs, _ in batches:
                parts.append(np.asarray(model.predict_on_batch(augment(inputs)), np.float32))
                bar.update(len(parts[-1]))
        total += np.concatenate(parts)
    return total / (passes + 1)


def copy_maker(seed: int):
    """A function from one batch of inputs to its augmented copy."""
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    shift = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1)

    def as_pixels(images) -> np.ndarray:
        return np.clip(np.round(keras.ops.convert_to_numpy(images)), 0, 255).astype(np.uint8)

    def augment(inputs):
        if not isinstance(inputs, dict):
            return as_pixels(shift(flip(tf.cast(inputs, tf.float32), training=True), training=True))
        images = inputs["image"].numpy()
        # Mirror a random half of the batch, boxes included: x -> 1 - x - w.
        mirrored = np.random.default_rng(seed).random(len(images)) < 0.5
        images[mirrored] = images[mirrored, :, ::-1]
        copy = {**{k: v.numpy() for k, v in inputs.items()}, "image": images}
        if "boxes" in copy:
            boxes = copy["boxes"].copy()
            real = copy["box_mask"] > 0
            flipped = 1.0 - boxes[..., 0] - boxes[..., 2]
            boxes[..., 0] = np.where(mirrored[:, None] & real, flipped, boxes[..., 0])
            copy["boxes"] = boxes
        return copy

    return augment
