"""A tiny model with the layer names of transferlab.models.build_model, for fast tests."""

from __future__ import annotations

import keras
import numpy as np


def build_tiny_model(num_classes: int, input_size: int = 16, image_size: int = 32, seed: int = 0):
    """image -> resize -> preprocess -> nested conv "backbone" -> head -> logits -> predictions."""
    keras.utils.set_random_seed(seed)
    inner = keras.Input((image_size, image_size, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inner)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(y)
    y = keras.layers.MaxPooling2D(2, name="pool")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_last")(y)
    backbone = keras.Model(inner, y, name="backbone")

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Resizing(image_size, image_size, name="resize")(inputs)
    x = keras.layers.Rescaling(1 / 255.0, name="preprocess")(x)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.1, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs)


def patch_images(count: int, size: int = 32, patch: int = 8, seed: int = 0):
    """Noisy images with one bright patch: red (class 0) or green (class 1), anywhere.

    Returns (images uint8, labels, patch corners (row, col)).
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=count)
    corners = rng.integers(0, size - patch + 1, size=(count, 2))
    for image, label, (r, c) in zip(images, labels, corners, strict=True):
        image[r : r + patch, c : c + patch] = 30
        image[r : r + patch, c : c + patch, label] = 240
    return images, labels, corners
