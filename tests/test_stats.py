"""experiments.stats against reference computations: scipy, statsmodels, sklearn, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.special import softmax
from sklearn import metrics as skm

from transferlab.experiments.stats import (
    apply_temperature,
    bootstrap_interval,
    expected_calibration_error,
    fit_temperature,
    format_interval,
    metric_intervals,
    reliability_bins,
    stratified_resamples,
    wilson_interval,
)


def scored(count: int, classes: int, seed: int = 0, decimals: int | None = None):
    """Labels and better-than-chance probabilities; rounded ones have many tied scores."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, classes, count)
    logits = rng.normal(size=(count, classes))
    logits[np.arange(count), y_true] += 1.0
    probabilities = softmax(logits, axis=1)
    if decimals is not None:
        probabilities = np.round(probabilities, decimals)
    return y_true, probabilities


def drawn_labels(logits: np.ndarray, seed: int) -> np.ndarray:
    """One label per row, drawn from softmax(logits): a perfectly calibrated truth."""
    rng = np.random.default_rng(seed)
    cumulative = softmax(logits, axis=1).cumsum(axis=1)
    return (rng.random((len(logits), 1)) > cumulative).sum(axis=1)


# --- intervals ----------------------------------------------------------------------------


def test_wilson_matches_a_hand_worked_value_and_scipy():
    # 8 of 10: centre (0.8 + z²/20) / (1 + z²/10), half-width z·sqrt(0.016 + z²/400) / (same).
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    for successes, n, confidence in [(0, 20, 0.95), (270, 300, 0.9), (9815, 10000, 0.99)]:
        reference = scipy_stats.binomtest(successes, n).proportion_ci(confidence, "wilson")
        got = wilson_interval(successes, n, confidence)
        assert got == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert np.isnan(wilson_interval(0, 0)).all()


def test_stratified_resamples_keep_every_class_count():
    y_true = np.array([0] * 7 + [1] * 2 + [2] * 31)
    blocks = list(stratified_resamples(y_true, 250, seed=3))
    rows = np.concatenate(blocks)
    assert rows.shape == (250, len(y_true))
    for row in rows:
        assert np.bincount(y_true[row]).tolist() == [7, 2, 31]
    # Not the identity: images are drawn with replacement.
    assert len({tuple(r) for r in rows}) == 250


def test_bootstrap_is_reproducible_and_covers_the_estimate():
    y_true, probabilities = scored(300, 4)

    def accuracy(y, p):
        return float((p.argmax(axis=1) == y).mean())

    first = bootstrap_interval(accuracy, y_true, probabilities, resamples=300, seed=7)
    again = bootstrap_interval(accuracy, y_true, probabilities, resamples=300, seed=7)
    other = bootstrap_interval(accuracy, y_true, probabilities, resamples=300, seed=8)
    assert first == again and first != other
    assert first[0] < accuracy(y_true, probabilities) < first[1]
    # About as wide as Wilson's (stratifying narrows it a little).
    wilson = wilson_interval(round(accuracy(y_true, probabilities) * 300), 300)
    assert first[1] - first[0] == pytest.approx(wilson[1] - wilson[0], rel=0.25)


def test_bootstrap_skips_resamples_where_the_metric_is_undefined():
    y_true, probabilities = scored(40, 2)
    calls = []

    def sometimes_undefined(y, p):
        calls.append(1)
        if len(calls) % 2:
            raise ValueError("undefined")
        return float("nan") if len(calls) % 4 == 0 else 0.5

    assert bootstrap_interval(sometimes_undefined, y_true, probabilities, 100) == (0.5, 0.5)


@pytest.mark.parametrize(("classes", "decimals"), [(2, None), (4, 1)])
def test_vectorised_intervals_equal_the_generic_bootstrap_of_sklearn_metrics(classes, decimals):
    """Same seed, same resamples: the bincount/rank-sum path must agree with sklearn's."""
    y_true, probabilities = scored(150, classes, seed=classes, decimals=decimals)
    labels = list(range(classes))
    references = {
        "macro_f1": lambda y, p: skm.f1_score(
            y, p.argmax(axis=1), average="macro", labels=labels, zero_division=0
        ),
        "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(axis=1)),
        # One-vs-rest macro, spelled out: rounded scores no longer sum to 1, which
        # roc_auc_score(multi_class="ovr") refuses.
        "roc_auc": (
            (lambda y, p: skm.roc_auc_score(y, p[:, 1]))
            if classes == 2
            else (lambda y, p: np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in labels]))
        ),
    }
    intervals = metric_intervals(y_true, probabilities, 0.9, resamples=40, seed=5)
    for name, metric in references.items():
        expected = bootstrap_interval(metric, y_true, probabilities, 40, 0.9, seed=5)
        got = intervals[name]
        assert (got["low"], got["high"]) == pytest.approx(expected, abs=1e-12), name
        assert got["method"] == "bootstrap"
        assert got["low"] <= metric(y_true, probabilities) <= got["high"], name
    correct = int((probabilities.argmax(axis=1) == y_true).sum())
    accuracy = intervals["accuracy"]
    assert (accuracy["low"], accuracy["high"]) == wilson_interval(correct, 150, 0.9)
    assert accuracy["method"] == "wilson"


def test_no_auc_interval_when_a_class_is_missing():
    y_true = np.array([0, 1, 0, 1, 0, 1])
    probabilities = softmax(np.random.default_rng(0).normal(size=(6, 3)), axis=1)
    intervals = metric_intervals(y_true, probabilities, resamples=100)
    assert set(intervals) == {"accuracy", "macro_f1", "balanced_accuracy"}


def test_format_interval():
    assert format_interval(0.98154, 0.96121, 0.99133) == "0.9815 [0.9612, 0.9913]"
    assert format_interval(0.5, 0.25, 0.75, digits=2) == "0.50 [0.25, 0.75]"
    assert format_interval(0.5, None, None) == "0.5000"


# --- calibration --------------------------------------------------------------------------


def test_ece_and_reliability_bins_on_a_hand_worked_example():
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2]]
    )
    y_true = np.array([0, 1, 1, 2])
    # Five bins of 0.2: (0.8, 1] holds two at 0.9, one right (gap |0.5 - 0.9|); (0.6, 0.8]
    # one right at 0.7 (gap 0.3); (0.4, 0.6] one wrong at 0.5 (gap 0.5).
    # ECE = (2 x 0.4 + 0.3 + 0.5) / 4 = 0.4.
    assert expected_calibration_error(y_true, probabilities, bins=5) == pytest.approx(0.4)
    table = reliability_bins(y_true, probabilities, bins=5)
    assert table["count"].tolist() == [0, 0, 1, 1, 2]
    assert table["accuracy"][2:].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert table["confidence"][2:].tolist() == pytest.approx([0.5, 0.7, 0.9])
    assert np.isnan(table["accuracy"][:2]).all()
    assert table["lower"][4] == pytest.approx(0.8) and table["upper"][4] == 1.0


def test_temperature_recovers_a_known_temperature_and_keeps_the_ranking():
    logits = np.random.default_rng(1).normal(scale=2.0, size=(6000, 4))
    y_true = drawn_labels(logits, seed=2)
    sharpened = softmax(logits * 2.5, axis=1)  # what a model 2.5x too confident reports
    assert fit_temperature(y_true, sharpened) == pytest.approx(2.5, rel=0.06)
    assert fit_temperature(y_true, softmax(logits / 2, axis=1)) == pytest.approx(0.5, rel=0.06)
    scaled = apply_temperature(sharpened.astype(np.float32), 2.5)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, softmax(logits, axis=1), atol=1e-6)
    assert (scaled.argmax(axis=1) == sharpened.argmax(axis=1)).all()


def test_an_over_confident_models_ece_falls_on_held_out_data():
    logits = np.random.default_rng(4).normal(scale=1.5, size=(4000, 10))
    y_true = drawn_labels(logits, seed=5)
    over_confident = softmax(logits * 3, axis=1)
    fit, held_out = slice(0, 2000), slice(2000, None)
    temperature = fit_temperature(y_true[fit], over_confident[fit])
    before = expected_calibration_error(y_true[held_out], over_confident[held_out])
    after = expected_calibration_error(
        y_true[held_out], apply_temperature(over_confident[held_out], temperature)
    )
    assert temperature > 2
    assert before > 0.15 and after < 0.05
