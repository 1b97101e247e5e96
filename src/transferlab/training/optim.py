"""Optimizers, learning-rate schedules, loss and metrics for both phases."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from transferlab.config import Config, PhaseConfig
from transferlab.models.schedules import OneCycle


def make_schedule(phase: PhaseConfig, steps_per_epoch: int):
    """The learning rate: a float (constant, plateau) or a per-step schedule."""
    if phase.learning_rate == "auto":
        # Training resolves "auto" (lr_range.resolve_learning_rate) before it gets here.
        raise ValueError(
            'learning_rate="auto" must be resolved to a number before an optimizer is made: '
            "run `make lr-find` and set the suggested number, or let train_phase resolve it"
        )
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


def compile_model(
    model: keras.Model, cfg: Config, optimizer, steps_per_execution: int = 1
) -> keras.Model:
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
        # Explicit: Keras's "auto" would turn XLA on for any GPU. JAX always compiles with
        # XLA (uncompiled, it runs op by op, many times slower).
        jit_compile=cfg.train.xla or keras.backend.backend() == "jax",
        steps_per_execution=steps_per_execution,
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
