"""Test-time augmentation keeps boxes on the pixels they frame."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferlab.evaluation.tta import copy_maker
from transferlab.models import CropToBox


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


def test_tta_mirrors_boxes_with_the_image_and_does_not_shift():
    batch = roi_batch()
    copy = copy_maker(seed=3)({k: tf.constant(v) for k, v in batch.items()})
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
    copy = copy_maker(seed=3)({k: tf.constant(v) for k, v in batch.items()})
    crop = CropToBox("largest", margin=0.1)
    original = np.asarray(crop([batch["image"], batch["boxes"], batch["box_mask"]]))
    augmented = np.asarray(crop([copy["image"], copy["boxes"], copy["box_mask"]]))
    mirrored = (copy["image"] != batch["image"]).any(axis=(1, 2, 3))
    expected = np.where(mirrored[:, None, None, None], original[:, :, ::-1], original)
    np.testing.assert_allclose(augmented, expected, atol=1e-3)
