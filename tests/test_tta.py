"""Test-time augmentation: drawn per image in the graph, seeded, boxes kept on their pixels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferlab.evaluation.tta import augment_inputs, augmented_batches, tta_probabilities
from transferlab.models import CropToBox

from .tiny_model import build_tiny_model


def roi_batch(count: int = 8, size: int = 16):
    rng = np.random.default_rng(0)
    boxes = np.zeros((count, 2, 4), np.float32)
    boxes[:, 0] = np.column_stack(
        [rng.uniform(0, 0.5, count), rng.uniform(0, 0.5, count), [0.3] * count, [0.4] * count]
    )
    mask = np.array([[1, 0]] * count, np.float32)
    return {
        "image": rng.integers(0, 256, (count, size, size, 3)).astype(np.uint8),
        "metadata": rng.normal(size=(count, 2)).astype(np.float32),
        "boxes": boxes,
        "box_mask": mask,
    }


def mirror_copy(batch: dict) -> dict:
    copy = augment_inputs({k: tf.constant(v) for k, v in batch.items()}, tf.constant([3, 0]))
    return {k: v.numpy() for k, v in copy.items()}


def test_tta_mirrors_boxes_with_the_image_and_does_not_shift():
    batch = roi_batch()
    copy = mirror_copy(batch)
    mirrored = (copy["image"] != batch["image"]).any(axis=(1, 2, 3))
    assert mirrored.any() and not mirrored.all()
    # Each copy is the image itself or its mirror: never shifted.
    expected = np.where(mirrored[:, None, None, None], batch["image"][:, :, ::-1], batch["image"])
    np.testing.assert_array_equal(copy["image"], expected)
    boxes = batch["boxes"].copy()
    boxes[mirrored, 0, 0] = 1.0 - boxes[mirrored, 0, 0] - boxes[mirrored, 0, 2]
    np.testing.assert_allclose(copy["boxes"], boxes)  # padding (mask 0) stays zero
    np.testing.assert_array_equal(copy["metadata"], batch["metadata"])
    np.testing.assert_array_equal(copy["box_mask"], batch["box_mask"])


def test_roi_crop_of_the_tta_copy_is_the_mirrored_crop():
    batch = roi_batch()
    copy = mirror_copy(batch)
    crop = CropToBox("largest", margin=0.1)
    original = np.asarray(crop([batch["image"], batch["boxes"], batch["box_mask"]]))
    augmented = np.asarray(crop([copy["image"], copy["boxes"], copy["box_mask"]]))
    mirrored = (copy["image"] != batch["image"]).any(axis=(1, 2, 3))
    expected = np.where(mirrored[:, None, None, None], original[:, :, ::-1], original)
    np.testing.assert_allclose(augmented, expected, atol=1e-3)


def copies_of(images: np.ndarray, labels: np.ndarray, seed: int, copy: int = 0) -> np.ndarray:
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    return np.concatenate([x.numpy() for x, _ in augmented_batches(batches, seed, copy)])


def test_tta_draws_each_images_copy_apart_and_repeats_with_the_seed():
    # Eight copies of one picture (a ramp, so every flip and shift shows) in two batches.
    ramp = np.linspace(0, 255, 24 * 3).reshape(24, 3).astype(np.uint8)
    picture = np.broadcast_to(ramp[None, :, :], (20, 24, 3))
    images = np.repeat(picture[None], 8, axis=0)
    labels = np.arange(8)
    first = copies_of(images, labels, seed=5)
    assert first.dtype == np.uint8 and first.shape == images.shape
    # Every image of a batch and every batch drew its own flip and shift.
    assert len({c.tobytes() for c in first}) == 8
    np.testing.assert_array_equal(copies_of(images, labels, seed=5), first)
    assert not np.array_equal(copies_of(images, labels, seed=6), first)
    assert not np.array_equal(copies_of(images, labels, seed=5, copy=1), first)
    # Some copies are mirrored (the ramp runs the other way), some are not.
    rising = first[:, 10, -1, 0].astype(int) > first[:, 10, 0, 0]
    assert rising.any() and not rising.all()
    # A shift of at most 10% of the width moves a ramp's mean by at most 10% of its range.
    assert np.abs(first.mean(axis=(1, 2, 3)) - picture.mean()).max() < 0.1 * 255


def test_tta_probabilities_average_the_plain_pass_and_each_copy():
    model = build_tiny_model(num_classes=3, input_size=16, image_size=16)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    batches = tf.data.Dataset.from_tensor_slices((images, np.zeros(10))).batch(4)

    def predicted(dataset):
        return np.concatenate([model.predict_on_batch(x) for x, _ in dataset])

    expected = np.mean(
        [predicted(batches)] + [predicted(augmented_batches(batches, 7, c)) for c in (0, 1)],
        axis=0,
    )
    averaged = tta_probabilities(model, batches, 10, passes=2, seed=7)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
