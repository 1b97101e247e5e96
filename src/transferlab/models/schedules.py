"""Learning-rate schedules of transferlab's own, registered so saved models reload.

A compiled model saves its optimizer, schedule included, so a ``.keras`` file names
this class; it lives beside the custom layers so that importing ``transferlab.models``
registers everything a saved model can name.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="transferlab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle policy (Smith, 2018): cosine warm-up to the peak, then cosine annealing."""

    def __init__(self, max_lr: float, total_steps: int, warmup_fraction: float = 0.3):
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = max(1.0, self.total_steps * self.warmup_fraction)
        start, end = self.max_lr / 25.0, self.max_lr / 1e4
        up = ops.minimum(step / warmup, 1.0)
        down = ops.clip((step - warmup) / max(1.0, self.total_steps - warmup), 0.0, 1.0)
        rising = start + (self.max_lr - start) * (1 - ops.cos(math.pi * up)) / 2
        falling = end + (self.max_lr - end) * (1 + ops.cos(math.pi * down)) / 2
        return ops.where(step < warmup, rising, falling)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
        }
