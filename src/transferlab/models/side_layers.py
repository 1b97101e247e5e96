"""Layers for inputs besides pixels: metadata normalization and region-of-interest crops.

Boxes reach the model as (batch, max_boxes, 4) relative x, y, w, h with a
(batch, max_boxes) mask, 1 for real boxes. Keras 3 ops only, registered for safe-mode
reloading; no weights, so they cost nothing to feature caching.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="transferlab")
class NormalizeMetadata(layers.Layer):
    """(x - mean) / std with the training split's statistics; a missing value (NaN) → 0.

    The statistics and column names live in the layer's config, so the saved model
    carries them and says which columns it expects. A column of variance 0 (constant in
    training) is only centred: dividing by its zero spread would blow up any other value.
    """

    def __init__(self, mean=(), variance=(), columns=(), **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.variance = [float(v) for v in variance]
        self.columns = [str(c) for c in columns]

    def call(self, x):
        x = ops.cast(x, "float32")
        mean = ops.convert_to_tensor(self.mean, "float32")
        variance = ops.convert_to_tensor(self.variance, "float32")
        std = ops.where(variance > 0, ops.sqrt(variance), ops.ones_like(variance))
        scaled = (x - mean) / std
        # 0 is the training mean after scaling: the fill-in for a missing value.
        return ops.where(ops.isnan(scaled), ops.zeros_like(scaled), scaled)

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean,
            "variance": self.variance,
            "columns": self.columns,
        }


def grow_boxes(boxes, margin: float):
    """Boxes grown by ``margin`` of their size on each side, clipped to the image."""
    x, y, w, h = (boxes[..., i] for i in range(4))
    x0 = ops.clip(x - margin * w, 0.0, 1.0)
    y0 = ops.clip(y - margin * h, 0.0, 1.0)
    x1 = ops.clip(x + w + margin * w, 0.0, 1.0)
    y1 = ops.clip(y + h + margin * h, 0.0, 1.0)
    return x0, y0, x1, y1


def interpolation_matrix(start, end, size: int):
    """(batch, size, size) bilinear weights sampling [start, end) of a side onto ``size``."""
    steps = (ops.arange(size, dtype="float32") + 0.5) / size
    # Source pixel centre of each output pixel, clamped so edge rows still sum to 1.
    centres = (start[:, None] + steps[None, :] * (end - start)[:, None]) * size - 0.5
    centres = ops.clip(centres, 0.0, size - 1.0)
    pixels = ops.arange(size, dtype="float32")
    return ops.maximum(1.0 - ops.abs(centres[:, :, None] - pixels[None, None, :]), 0.0)


@keras.saving.register_keras_serializable(package="transferlab")
class CropToBox(layers.Layer):
    """The image cropped to one box (grown by ``margin``) and stretched back to its size.

    ``select``: "largest" box or box number ``index``. An image without that box keeps
    its whole frame. The crop is a bilinear resample written as two matrix products, so
    it needs no TensorFlow-only op and gradients flow back to the image.
    """

    def __init__(self, select: str = "largest", index: int = 0, margin: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if select not in ("largest", "index"):
            raise ValueError(f"CropToBox select={select!r}: use 'largest' or 'index'")
        self.select, self.index, self.margin = select, index, margin

    def call(self, inputs):
        image, boxes, mask = inputs
        image = ops.cast(image, "float32")
        boxes, mask = ops.cast(boxes, "float32"), ops.cast(mask, "float32")
        if self.select == "largest":
            chosen = ops.argmax(boxes[..., 2] * boxes[..., 3] * mask, axis=1)
        else:
            chosen = ops.full((ops.shape(boxes)[0],), self.index, dtype="int32")
        box = ops.take_along_axis(boxes, ops.reshape(chosen, (-1, 1, 1)), axis=1)[:, 0]
        present = ops.take_along_axis(mask, ops.reshape(chosen, (-1, 1)), axis=1)
        whole = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0], "float32")
        box = ops.where(present > 0, box, whole[None, :])
        x0, y0, x1, y1 = grow_boxes(box, self.margin)
        height, width = image.shape[1], image.shape[2]
        rows = interpolation_matrix(y0, y1, height)
        cols = interpolation_matrix(x0, x1, width)
        x = ops.einsum("bsh,bhwc->bswc", rows, image)
        return ops.einsum("btw,bswc->bstc", cols, x)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "select": self.select,
            "index": self.index,
            "margin": self.margin,
        }


@keras.saving.register_keras_serializable(package="transferlab")
class MaskOutsideBoxes(layers.Layer):
    """Pixels outside every box (grown by ``margin``) set to 0; an image without boxes stays.

    All boxes act as one mask on the image, so a pretrained three-channel backbone
    still takes it.
    """

    def __init__(self, margin: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def call(self, inputs):
        image, boxes, mask = inputs
        image = ops.cast(image, "float32")
        boxes, mask = ops.cast(boxes, "float32"), ops.cast(mask, "float32")
        x0, y0, x1, y1 = grow_boxes(boxes, self.margin)  # each (batch, boxes)
        height, width = image.shape[1], image.shape[2]
        ys = (ops.arange(height, dtype="float32") + 0.5) / height
        xs = (ops.arange(width, dtype="float32") + 0.5) / width
        inside_y = (ys[None, None, :] >= y0[..., None]) & (ys[None, None, :] < y1[..., None])
        inside_x = (xs[None, None, :] >= x0[..., None]) & (xs[None, None, :] < x1[..., None])
        # (batch, boxes, H, W): inside one box; any real box keeps the pixel.
        inside = ops.cast(inside_y[..., :, None] & inside_x[..., None, :], "float32")
        keep = ops.max(inside * mask[:, :, None, None], axis=1)
        has_box = ops.max(mask, axis=1)[:, None, None]
        keep = ops.where(has_box > 0, keep, ops.ones_like(keep))
        return image * keep[..., None]

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
