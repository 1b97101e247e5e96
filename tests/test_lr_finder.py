"""The learning-rate range test (training.lr_range), the lr-find stage and learning_rate=auto."""

from __future__ import annotations

import copy
import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.conftest import demo_config
from transferlab.experiments.lr_finder import find_learning_rate, with_head_learning_rate
from transferlab.training import lr_range, train_phase
from transferlab.training.lr_range import exponential_rates, range_test, valley
from transferlab.training.optim import make_optimizer

# The cfg fixture's settings (tests/conftest.py), for module-scoped runs.
TEST_SETTINGS = {"model.image_size": 32, "phase1.epochs": 1, "phase2.epochs": 1}
TEST_SETTINGS["train.batch_size"] = 16
# Small and fast: 10 digits per class, the small backbone, a short test over two seeds.
SMALL = {
    "data.subset_per_class": 10,
    "model.backbone": "small_resnet",
    "lr_find.steps": 30,
    "lr_find.seeds": 2,
}


def noisy_separable_problem(n=480, dims=32, classes=4, seed=0):
    """Features around class centres, with a fifth of the labels redrawn at random.

    Any sane learning rate learns the centres; the noisy labels make a far too large one
    blow the loss up, as real labels do.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims))
    labels = rng.integers(0, classes, n)
    features = (centres[labels] + rng.normal(size=(n, dims))).astype("float32")
    redrawn = rng.random(n) < 0.2
    labels[redrawn] = rng.integers(0, classes, redrawn.sum())
    return features, np.eye(classes, dtype="float32")[labels]


def linear_head(dims, classes, optimizer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dims,))
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))
    model.compile(optimizer, "categorical_crossentropy")
    return model


def batches_of(features, one_hot, batch=32):
    def batches(seed):
        data = tf.data.Dataset.from_tensor_slices((features, one_hot)).repeat()
        return data.shuffle(len(features), seed=seed).batch(batch, drop_remainder=True)

    return batches


def test_valley_is_the_middle_of_the_longest_fall():
    flat, fall, blow_up = np.full(20, 2.0), np.linspace(2.0, 0.5, 41)[1:], np.geomspace(0.5, 9, 20)
    losses = np.concatenate([flat, fall, blow_up])
    assert 35 <= valley(losses) <= 45  # the fall runs over steps 20-59


def test_range_test_on_separable_features(tmp_path):
    features, one_hot = noisy_separable_problem()
    model = linear_head(32, 4, keras.optimizers.SGD(1e-5, momentum=0.9))
    before = [w.copy() for w in model.get_weights()]
    rates = exponential_rates(1e-5, 100.0, 100)
    test = range_test(model, batches_of(features, one_hot), rates, seeds=[0, 1, 2])

    # The weights the test started from are back.
    for start, now in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(start, now)
    # Every seed's loss blew up before 100 (4x its best), and the test stopped there.
    assert all(50 <= len(c) < 100 for c in test.curves)
    # SGD on a linear softmax over unit-scale features learns well around 0.01-0.3.
    assert 3e-3 <= test.suggestion <= 0.5
    # It lies on the fall: below the flat start, before the bottom (past it, it blows up).
    at = test.median[test.suggestion_index]
    assert test.median.min() < at < test.median[0]
    assert test.suggestion_index < np.argmin(test.median)
    # Three seeds, three different curves: the band is there and holds the median.
    low, high = test.band
    assert np.all(low <= test.median) and np.all(test.median <= high)
    assert np.max(high - low) > 0
    frame = test.to_frame()
    assert list(frame.columns[2:5]) == ["loss_seed0", "loss_seed1", "loss_seed2"]
    assert frame["suggested"].sum() == 1 and len(frame) == 100
    assert lr_range.plot_range_test(test, tmp_path / "lr.png", "t").stat().st_size > 10_000

    # The suggestion trains: 3 epochs at it beat 3 epochs at a hundredth of it.
    def loss_after(rate):
        head = linear_head(32, 4, keras.optimizers.SGD(rate, momentum=0.9))
        return head.fit(features, one_hot, epochs=3, verbose=0).history["loss"][-1]

    assert loss_after(test.suggestion) < 0.8 * loss_after(test.suggestion / 100)


def shrink(cfg, **more):
    """The ``cfg`` fixture with SMALL's settings and ``more`` (section__name=value)."""
    settings = {**SMALL, **{k.replace("__", "."): v for k, v in more.items()}}
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_lr_find_stage_writes_its_run(cfg):
    result = find_learning_rate(shrink(cfg))
    assert f"suggested phase1.learning_rate: {result.suggestion:.1e}" in str(result)
    assert f"SET='phase1.learning_rate={result.suggestion:.1e}'" in str(result)
    assert (result.run_dir / "figures" / "lr_find.png").stat().st_size > 10_000
    curves = pd.read_csv(result.run_dir / "lr_find.csv")
    assert len(curves) == 30 and {"loss_seed42", "loss_seed43", "median"} <= set(curves.columns)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["suggestion"] == pytest.approx(result.suggestion)
    assert summary["phase"] == "phase1" and summary["seeds"] == [42, 43]
    assert summary["steps"] == 30 and summary["wall_time_s"] > 0
    # Sweeps and cv resolve "auto" the same way, on the features now cached.
    cfg.phase1.learning_rate = "auto"
    assert with_head_learning_rate(cfg).phase1.learning_rate == result.suggestion


@pytest.fixture(scope="module")
def auto_phase1(tmp_path_factory):
    """Phase 1 (one epoch) with learning_rate=auto."""
    root = tmp_path_factory.mktemp("auto")
    cfg = demo_config(root, {**TEST_SETTINGS, **SMALL, "phase1.learning_rate": "auto"})
    return cfg, train_phase(cfg, "phase1")


def test_auto_learning_rate_is_found_and_recorded(auto_phase1):
    cfg, result = auto_phase1
    recorded = json.loads((result.run_dir / "config.json").read_text())["phase1"]["learning_rate"]
    assert isinstance(recorded, float) and cfg.lr_find.min_lr < recorded < cfg.lr_find.max_lr
    assert cfg.phase1.learning_rate == "auto"  # the caller's config is left as it was
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["learning_rate"] == recorded
    assert summary["learning_rate_source"] == "lr_find"
    # The epoch trained at the recorded rate.
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    np.testing.assert_allclose(metrics["learning_rate"], [recorded], rtol=1e-6)
    assert (result.run_dir / "figures" / "lr_find.png").is_file()
    assert len(pd.read_csv(result.run_dir / "lr_find.csv")) == SMALL["lr_find.steps"]


def test_a_resumed_auto_run_reuses_its_recorded_rate(cfg, tmp_path, monkeypatch):
    """What run_phase does on resume: the run folder's config.json already holds the number."""
    cfg.phase2.learning_rate = "auto"
    recorded = copy.deepcopy(cfg)
    recorded.phase2.learning_rate = 3.2e-5
    recorded.save(tmp_path / "config.json")
    monkeypatch.setattr(lr_range, "find_phase_learning_rate", searched_again)
    resolved, facts = lr_range.resolve_learning_rate(cfg, "phase2", tmp_path, None, None)
    assert resolved.phase2.learning_rate == 3.2e-5 and cfg.phase2.learning_rate == "auto"
    assert facts == {"learning_rate": 3.2e-5, "learning_rate_source": "lr_find"}


def searched_again(*args, **kwargs):
    raise AssertionError("a resumed learning_rate=auto run searched again")


def test_a_set_learning_rate_is_recorded_as_set(cfg, tmp_path):
    resolved, facts = lr_range.resolve_learning_rate(cfg, "phase1", tmp_path, None, None)
    assert resolved is cfg
    assert facts == {"learning_rate": cfg.phase1.learning_rate, "learning_rate_source": "config"}


def test_an_unresolved_auto_rate_makes_no_optimizer(cfg):
    cfg.phase1.learning_rate = "auto"
    with pytest.raises(ValueError, match="lr-find"):
        make_optimizer(cfg.phase1, None, 10)


@pytest.mark.slow  # ~20 s: loads phase 1's model and traces the full model's training step
def test_lr_find_stage_for_phase2_starts_from_phase1s_best(auto_phase1):
    cfg, _ = auto_phase1
    cfg = copy.deepcopy(cfg)
    cfg.lr_find.phase, cfg.lr_find.steps, cfg.lr_find.seeds = "phase2", 10, 1
    result = find_learning_rate(cfg)
    assert "suggested phase2.learning_rate" in str(result)
    assert cfg.lr_find.min_lr <= result.suggestion <= cfg.lr_find.max_lr
    assert (result.run_dir / "figures" / "lr_find.png").is_file()
