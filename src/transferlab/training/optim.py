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


def logits_view(model: keras.Model) -> keras.Model:
    """``model`` up to its "logits" layer, before the softmax: the same layers and weights.

    Training fits this view so the loss reads the logits (see ``compile_model``).
    """
    # model.input, not model.inputs: a dict of named inputs (fusion's "features" and
    # "metadata") stays a dict, so the view takes the same batches as the model.
    return keras.Model(model.input, logits_output(model), name=f"{model.name}_logits")


def logits_output(model: keras.Model):
    """The tensor the softmax "predictions" reads, in ``model``'s own graph.

    Not ``get_layer("logits").output``: the same layers are also called in other models (a
    freeze-once suffix shares them with the model it was split from), and that would be
    another graph's tensor. A model whose last layer is a nested model ending in the
    softmax (phase 2's suffix: the backbone's tail, then the head) calls that model's
    logits view on the same inputs.
    """
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; expected one")
    last, node_index, _ = model.outputs[0]._keras_history
    call = last._inbound_nodes[node_index]
    if last.name == "predictions":
        return call.input_tensors[0]
    if isinstance(last, keras.Model):
        return logits_view(last)(*call.arguments.args, **call.arguments.kwargs)
    raise ValueError(
        f"model {model.name!r} ends in {last.name!r}, not the softmax 'predictions' after "
        "'logits': build it with transferlab.models (build_model, build_head_model)"
    )


def compile_model(
    model: keras.Model, cfg: Config, optimizer, steps_per_execution: int = 1
) -> keras.Model:
    """Compile ``model`` and return the compiled view of its logits that ``fit`` trains.

    The loss is computed from the logits: on the softmax's probabilities a saturated
    softmax (a random-init backbone's huge features) gives wrong classes probability 0,
    which the loss clips, so those images give no gradient. TensorFlow's Keras quietly
    reads the logits behind a softmax; JAX's cannot. ``model`` (ending in the softmax
    "predictions", as it is saved, evaluated and exported) shares the view's weights and
    optimizer, so a checkpoint of ``model`` holds what the view trained. One-hot labels:
    label smoothing, MixUp and CutMix all need them. The loss runs in float32 (Keras's
    losses take the float32 default dtype), also on mixed precision's float16 logits.

    Accuracy and macro-F1 take each row's largest value, so they read logits as they read
    probabilities. Macro-F1 is Keras's streaming F1Score: it accumulates counts over the
    whole epoch (or the whole validation set), so it is the true macro-F1, not a batch mean.
    """
    # The softmax model first: under mixed_float16 its compile wraps the optimizer in a
    # LossScaleOptimizer, which the view then shares (and a checkpoint saves).
    compile_with(model, cfg, optimizer, from_logits=False, steps=steps_per_execution)
    view = logits_view(model)
    compile_with(view, cfg, model.optimizer, from_logits=True, steps=steps_per_execution)
    return view


def compile_with(model: keras.Model, cfg: Config, optimizer, from_logits: bool, steps: int):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=cfg.train.label_smoothing
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="macro", name="macro_f1"),
        ],
        # Explicit: Keras's "auto" would turn XLA on for any GPU. JAX always compiles with
        # XLA (uncompiled, it runs op by op, many times slower).
        jit_compile=cfg.train.xla or keras.backend.backend() == "jax",
        steps_per_execution=steps,
    )


def class_weights(cfg: Config, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """``{class: weight}`` for train.class_weight="balanced", else None."""
    if cfg.train.class_weight == "none":
        return None
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    table = dict.fromkeys(range(num_classes), 1.0)
    table.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return table
