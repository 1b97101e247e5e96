"""Training computes the loss from the logits, so a saturated softmax still gives gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from transferlab.models import build_head_model
from transferlab.training.optim import compile_model, make_optimizer


def cross_entropy_of_logits(logits: np.ndarray, one_hot: np.ndarray, smoothing: float) -> float:
    """Label-smoothed cross-entropy from the logits, in float64 (log-softmax, no clipping)."""
    targets = one_hot * (1 - smoothing) + smoothing / one_hot.shape[1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(targets * log_softmax).sum(axis=1).mean())


def test_the_loss_reads_the_logits_of_a_saturated_softmax_and_the_saved_model_ends_in_it(
    cfg, tmp_path
):
    # Features as huge as a random-init ResNet50's: the softmax saturates, wrong classes
    # get probability 0, and a loss on the probabilities clips them (16.1) with no gradient.
    # The JAX backend sees the model's outputs as plain arrays, as here: no hidden logits.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(32, 8)) * 1e4).astype(np.float32)
    one_hot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=32)]
    head = build_head_model(cfg, num_classes=3, feature_dim=8)
    trainer = compile_model(head, cfg, make_optimizer(cfg.phase1, None, steps_per_epoch=1))

    # The logits, read straight off the head (one graph, so the layer's output is its own).
    logits_of_head = keras.Model(head.inputs, head.get_layer("logits").output)
    logits = np.asarray(logits_of_head.predict(features, verbose=0), dtype=np.float64)
    expected = cross_entropy_of_logits(logits, one_hot, cfg.train.label_smoothing)
    assert expected > 100  # far above the 16.1 a clipped probability gives
    # The loss training computes on its model's outputs, as plain arrays.
    outputs = trainer.predict(features, verbose=0)
    loss = float(trainer.compute_loss(features, one_hot, outputs))
    assert loss == pytest.approx(expected, rel=1e-3)

    before = head.get_layer("logits").get_weights()[0].copy()
    trainer.fit(features, one_hot, batch_size=32, epochs=3, verbose=0)
    assert not np.allclose(head.get_layer("logits").get_weights()[0], before)

    # The head shares the trained weights, ends in the softmax and saves the optimizer.
    head.save(tmp_path / "head.keras")
    saved = keras.models.load_model(tmp_path / "head.keras")
    assert saved.layers[-1].name == "predictions"
    assert int(saved.optimizer.iterations) == 3
    probabilities = saved.predict(features, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    trained_logits = trainer.predict(features, verbose=0)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), trained_logits.argmax(axis=1))
