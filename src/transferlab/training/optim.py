"""Optimizers, learning-rate schedules, loss and metrics for both phases."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops
from sklearn.utils.class_weight import compute_class_weight

from transferlab.config import Config, PhaseConfig


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


def make_schedule(phase: PhaseConfig, steps_per_epoch: int):
    """The learning rate: a float (constant, plateau) or a per-step schedule."""
    total = max(1, phase.epochs * steps_per_epoch)
    if phase.schedule == "cosine":
        warmup = min(phase.warmup_epochs * steps_per_epoch, total - 1)
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(phase.learning_rate, total)
        return keras.optimizers.schedules.CosineDecay(
            phase.learning_rate / 100,
            decay_steps=total - warmup,
            warmup_target=phase.learning_rate,
            warmup_steps=warmup,
        )
    if phase.schedule == "onecycle":
        return OneCycle(phase.learning_rate, total)
    # constant, and plateau (ReduceLROnPlateau lowers it from a callback).
    return phase.learning_rate


def make_optimizer(phase: PhaseConfig, clip_norm: float | None, steps_per_epoch: int):
    """Adam, AdamW or SGD with momentum, with the phase's schedule and gradient clipping."""
    lr = make_schedule(phase, steps_per_epoch)
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(lr, clipnorm=clip_norm),
        "adamw": lambda: keras.optimizers.AdamW(
            lr, weight_decay=phase.weight_decay, clipnorm=clip_norm
        ),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=phase.momentum, clipnorm=clip_norm),
    }
    return optimizers[phase.optimizer]()


def compile_model(model: keras.Model, cfg: Config, optimizer) -> keras.Model:
    """Compile with one-hot labels: label smoothing, MixUp and CutMix all need them.

    Macro-F1 is Keras's streaming F1Score: it accumulates counts over the whole
    epoch (or the whole validation set), so it is the true macro-F1, not a batch mean.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="macro", name="macro_f1"),
        ],
        # Explicit: Keras's "auto" would turn XLA on for any GPU.
        jit_compile=cfg.train.xla,
    )
    return model


def class_weights(cfg: Config, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """``{class: weight}`` for train.class_weight="balanced", else None."""
    if cfg.train.class_weight == "none":
        return None
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    table = dict.fromkeys(range(num_classes), 1.0)
    table.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return table
