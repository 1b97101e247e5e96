"""Custom layers the models use, serializable so saved models reload in safe mode."""

from __future__ import annotations

import keras
from keras import layers, ops

# --- serializable layers (no Lambda: saved models reload in safe mode) -------------

# Per-mode input scaling from 0..255 RGB: (reverse to BGR?, scale, offset) per channel.
PREPROCESS_MODES = {
    # keras.applications.resnet / resnet_v1: BGR, ImageNet mean subtracted, no scaling.
    "caffe": (True, (1.0, 1.0, 1.0), (-103.939, -116.779, -123.68)),
    # resnet_v2, mobilenet_v2: scale to [-1, 1].
    "tf": (False, (1 / 127.5,) * 3, (-1.0, -1.0, -1.0)),
    # torch-style: [0, 1] then ImageNet mean/std.
    "torch": (
        False,
        tuple(1 / (255.0 * s) for s in (0.229, 0.224, 0.225)),
        tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)),
    ),
    # EfficientNet and the from-scratch ResNet scale inside the backbone itself.
    "none": (False, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
}


@keras.saving.register_keras_serializable(package="transferlab")
class Preprocess(layers.Layer):
    """The backbone's own ``preprocess_input`` for raw 0..255 RGB, as a saveable layer."""

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocess mode {mode!r}: use one of {', '.join(PREPROCESS_MODES)}")
        self.mode = mode

    def call(self, x):
        bgr, scale, offset = PREPROCESS_MODES[self.mode]
        x = ops.cast(x, self.compute_dtype)
        if bgr:
            x = ops.flip(x, axis=-1)
        return x * ops.convert_to_tensor(scale, self.compute_dtype) + ops.convert_to_tensor(
            offset, self.compute_dtype
        )

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="transferlab")
class StochasticDepth(layers.Layer):
    """Drop a residual branch for whole samples while training (Huang et al., 2016).

    Off while the layer is frozen: a frozen backbone then computes the same features in
    training as the feature-cached phase 1 computes once, in inference.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or not self.trainable or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.cast(keras.random.uniform(shape, seed=self.seed_generator) < keep, x.dtype)
        return x * mask / keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
