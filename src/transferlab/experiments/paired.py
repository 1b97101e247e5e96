"""Paired tests: is run B really better than run A on the same images?

Two models scored on the same images are compared image by image, which is far more
sensitive than comparing their two accuracies: only the images on which they disagree
carry information. ``mcnemar_exact`` tests correctness (an exact binomial test on the
discordant pairs), ``accuracy_difference_interval`` puts a paired (Newcombe) interval on
the accuracy difference, ``paired_bootstrap`` does both for any metric (macro-F1) by
resampling images, ``images_needed`` says how many images would show a difference this
small, and ``verdict`` turns the numbers into one plain sentence.

Plain NumPy, SciPy and statsmodels: evaluation, compare and reports all use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

# Metrics the bootstrap computes from predicted labels without scikit-learn (fast: one
# bincount per resample); anything else is a callable(y_true, probabilities) -> float.
LABEL_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test of two runs' correctness on the same images.

    ``b``: images A got right and B wrong; ``c``: A wrong, B right. Under "no difference"
    each discordant image is a fair coin, so p is a two-sided binomial test of ``c`` out
    of ``b + c`` (statsmodels' ``mcnemar(exact=True)``). ``difference`` is B's accuracy
    minus A's.
    """
    n, both, b, c, neither = contingency(correct_a, correct_b)
    p = 1.0 if b + c == 0 else float(mcnemar([[both, b], [c, neither]], exact=True).pvalue)
    return {
        "n": n,
        "both_right": both,
        "only_a_right": b,
        "only_b_right": c,
        "both_wrong": neither,
        "discordant": b + c,
        "accuracy_a": (both + b) / n,
        "accuracy_b": (both + c) / n,
        "difference": (c - b) / n,
        "p_value": min(p, 1.0),
        "method": "exact McNemar (binomial on discordant pairs)",
    }


def accuracy_difference_interval(correct_a, correct_b, confidence: float = 0.95) -> dict:
    """Newcombe's paired interval (his method 10) on accuracy B minus accuracy A.

    It combines each run's Wilson interval with the correlation between the two runs'
    correctness, so it stays inside [-1, 1] and behaves on small samples, where the
    Wald interval does not (Newcombe 1998, Statistics in Medicine 17:2635).
    """
    n, both, b, c, neither = contingency(correct_a, correct_b)
    p_a, p_b = (both + b) / n, (both + c) / n
    alpha = 1 - confidence
    low_a, high_a = proportion_confint(both + b, n, alpha=alpha, method="wilson")
    low_b, high_b = proportion_confint(both + c, n, alpha=alpha, method="wilson")
    phi = correlation(both, b, c, neither)
    delta = p_b - p_a
    down = math.sqrt(
        max((p_b - low_b) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a) + (high_a - p_a) ** 2, 0)
    )
    up = math.sqrt(
        max((high_b - p_b) ** 2 - 2 * phi * (high_b - p_b) * (p_a - low_a) + (p_a - low_a) ** 2, 0)
    )
    return {
        "difference": delta,
        "low": max(delta - down, -1.0),
        "high": min(delta + up, 1.0),
        "confidence": confidence,
        "method": "Newcombe paired (Wilson)",
    }


def correlation(both: int, b: int, c: int, neither: int) -> float:
    """Phi, the correlation of the two runs' correctness; 0 when a margin is empty."""
    denominator = (both + b) * (c + neither) * (both + c) * (b + neither)
    return (both * neither - b * c) / math.sqrt(denominator) if denominator else 0.0


def contingency(correct_a, correct_b) -> tuple[int, int, int, int, int]:
    """n, both right, only A right (b), only B right (c), both wrong: the paired 2x2 table."""
    a_right, b_right = paired_booleans(correct_a, correct_b)
    both = int(np.sum(a_right & b_right))
    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    return len(a_right), both, b, c, len(a_right) - both - b - c


def paired_booleans(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a_right = np.asarray(correct_a, dtype=bool)
    b_right = np.asarray(correct_b, dtype=bool)
    if a_right.shape != b_right.shape or a_right.ndim != 1 or not len(a_right):
        raise ValueError(
            f"a paired test needs both runs' correctness on the same images: got "
            f"{a_right.shape} and {b_right.shape} values; score both runs on one split"
        )
    return a_right, b_right


def paired_bootstrap(
    metric: str | Callable,
    y_true,
    prob_a,
    prob_b,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Bootstrap of ``metric(B) - metric(A)``, resampling the same images for both runs.

    Resampling is stratified by true class (each class keeps its count, so macro-F1 is
    always defined) and seeded, so the same inputs give the same interval. The interval
    is the percentile interval; p is two-sided, from the bootstrap distribution shifted
    to the null of no difference (Efron and Tibshirani, ch. 16).
    ``metric``: "accuracy", "macro_f1", "balanced_accuracy", or a callable
    ``(y_true, probabilities) -> float``.
    """
    y_true = np.asarray(y_true, dtype=int)
    prob_a, prob_b = np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    if prob_a.shape != prob_b.shape or len(prob_a) != len(y_true):
        raise ValueError(
            f"paired bootstrap: {len(y_true)} labels but probabilities of shapes "
            f"{prob_a.shape} and {prob_b.shape}; score both runs on the same images"
        )
    score = metric_function(metric, prob_a.shape[1])
    # Label metrics read the predicted labels: take each run's argmax once, not per resample.
    run_a, run_b = (p.argmax(axis=1) if isinstance(metric, str) else p for p in (prob_a, prob_b))
    observed = score(y_true, run_b, None) - score(y_true, run_a, None)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y_true == k) for k in np.unique(y_true)]
    differences = np.empty(resamples)
    for i in range(resamples):
        index = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        differences[i] = score(y_true, run_b, index) - score(y_true, run_a, index)
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    # How often a world with no difference (the distribution centred on 0) gives one at
    # least as large as the observed; +1 so that p is never exactly 0.
    extreme = np.sum(np.abs(differences - observed) >= abs(observed) - 1e-12)
    return {
        "metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "metric"),
        "difference": float(observed),
        "low": float(low),
        "high": float(high),
        "std_error": float(differences.std(ddof=1)),
        "p_value": float(min(1.0, (extreme + 1) / (resamples + 1))),
        "confidence": confidence,
        "resamples": resamples,
        "seed": seed,
        "method": "paired stratified bootstrap (percentile)",
    }


def metric_function(metric: str | Callable, num_classes: int) -> Callable:
    """``score(y_true, run, index)`` on the images ``index`` (all: None).

    ``run`` is the predicted labels for a named metric, the probabilities for a callable.
    """
    if callable(metric):

        def custom(y_true, probabilities, index):
            if index is not None:
                y_true, probabilities = y_true[index], probabilities[index]
            return float(metric(y_true, probabilities))

        return custom
    if metric not in LABEL_METRICS:
        raise ValueError(
            f"metric={metric!r}: use one of {', '.join(LABEL_METRICS)} or a function "
            "(y_true, probabilities) -> float"
        )

    def from_labels(y_true, y_pred, index):
        if index is not None:
            y_true, y_pred = y_true[index], y_pred[index]
        return label_metric(metric, y_true, y_pred, num_classes)

    return from_labels


def label_metric(metric: str, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Accuracy, macro-F1 or balanced accuracy from labels, as scikit-learn computes them.

    Macro-F1 averages over every class (a class never predicted nor present scores 0,
    scikit-learn's ``zero_division=0``), as evaluation's metrics do.
    """
    right = y_true == y_pred
    if metric == "accuracy":
        return float(right.mean())
    true_count = np.bincount(y_true, minlength=num_classes)
    hits = np.bincount(y_true[right], minlength=num_classes)
    if metric == "balanced_accuracy":
        present = true_count > 0
        return float((hits[present] / true_count[present]).mean())
    predicted_count = np.bincount(y_pred, minlength=num_classes)
    denominator = true_count + predicted_count
    f1 = np.divide(2 * hits, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return float(f1.mean())


def images_needed(
    diff: float, discordant_rate: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """About how many images McNemar's test needs to detect an accuracy difference ``diff``.

    Connor's (1987) approximation, with ``discordant_rate`` the share of images on which
    the two runs disagree (at least ``|diff|``): n = (z_a sqrt(psi) + z_b sqrt(psi -
    diff^2))^2 / diff^2. None when ``diff`` is 0 (no number of images would do).
    """
    diff = abs(diff)
    if diff == 0:
        return None
    psi = min(max(discordant_rate, diff), 1.0)
    z_alpha, z_beta = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (z_alpha * math.sqrt(psi) + z_beta * math.sqrt(max(psi - diff**2, 0))) ** 2 / diff**2
    return math.ceil(n)


def images_needed_from_error(
    diff: float, std_error: float, n: int, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Images needed to detect ``diff`` when its standard error on ``n`` images is known.

    The standard error shrinks as 1/sqrt(n), so n' = n (z_a + z_b)^2 se^2 / diff^2; for
    metrics without a closed-form sample size, such as macro-F1 from the bootstrap.
    """
    if diff == 0 or not std_error > 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(n * (z * std_error / diff) ** 2)


def points(value: float) -> str:
    """A difference of proportions in percentage points, one decimal."""
    return f"{100 * value:.1f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict(
    diff: float,
    low: float,
    high: float,
    p: float,
    n: int,
    alpha: float = 0.05,
    names: Sequence[str] = ("A", "B"),
    needed: int | None = None,
    metric: str = "",
) -> str:
    """One plain sentence on B minus A.

    "B is better by 2.1 points [0.9, 3.3], p = 0.001" when p < ``alpha``; otherwise "no
    difference detectable on 2,000 images (about 9,100 would be needed to detect 0.5
    points)". ``metric`` ("macro-F1") is named when given.
    """
    a, b = names
    what = f" in {metric}" if metric else ""
    if p < alpha and diff != 0:
        better, worse = (b, a) if diff > 0 else (a, b)
        size = abs(diff)
        # The interval of the winner's advantage: B - A's interval, flipped if A won.
        lo, hi = (low, high) if diff > 0 else (-high, -low)
        return (
            f"{better} is better than {worse}{what} by {points(size)} points "
            f"[{points(lo)}, {points(hi)}], {p_text(p)}"
        )
    sentence = f"no difference{what} detectable on {n:,} images ({p_text(p)}"
    if diff == 0:
        return sentence + "; the two score the same)"
    if needed is None:
        return sentence + ")"
    return sentence + (
        f"; about {two_figures(needed):,} would be needed to detect {points(abs(diff))} points)"
    )


def two_figures(count: int) -> int:
    """4,501 -> 4,500: an approximate sample size shown without false precision."""
    return count if count < 100 else int(round(count, 2 - len(str(count))))


def compare_predictions(
    y_true,
    prob_a,
    prob_b,
    alpha: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    names: Sequence[str] = ("A", "B"),
) -> dict:
    """Everything compare and the reports say about one pair of runs on the same images.

    Accuracy: exact McNemar, Newcombe's interval, the images needed. Macro-F1: the paired
    bootstrap. Each with its verdict sentence; ``detectable``: p < ``alpha``.
    """
    y_true = np.asarray(y_true, dtype=int)
    prob_a, prob_b = np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    correct_a, correct_b = prob_a.argmax(axis=1) == y_true, prob_b.argmax(axis=1) == y_true
    test = mcnemar_exact(correct_a, correct_b)
    interval = accuracy_difference_interval(correct_a, correct_b, confidence)
    n = test["n"]
    needed = images_needed(test["difference"], test["discordant"] / n, alpha)
    accuracy = {
        **test,
        "low": interval["low"],
        "high": interval["high"],
        "interval_method": interval["method"],
        "confidence": confidence,
        "detectable": test["p_value"] < alpha,
        "images_needed": needed,
    }
    accuracy["verdict"] = verdict(
        test["difference"], interval["low"], interval["high"], test["p_value"], n, alpha,
        names, needed, "accuracy",
    )  # fmt: skip
    boot = paired_bootstrap("macro_f1", y_true, prob_a, prob_b, resamples, confidence, seed)
    boot_needed = images_needed_from_error(boot["difference"], boot["std_error"], n, alpha)
    macro_f1 = {
        **boot,
        "n": n,
        "detectable": boot["p_value"] < alpha,
        "images_needed": boot_needed,
    }
    macro_f1["verdict"] = verdict(
        boot["difference"], boot["low"], boot["high"], boot["p_value"], n, alpha, names,
        boot_needed, "macro-F1",
    )  # fmt: skip
    names = list(names)
    return {"n": n, "alpha": alpha, "names": names, "accuracy": accuracy, "macro_f1": macro_f1}
