"""Intervals and calibration for classifier metrics: plain NumPy, SciPy and statsmodels.

Accuracy gets a Wilson interval (a proportion of independent images). Macro-F1,
balanced accuracy and ROC AUC get a stratified bootstrap: each resample draws every
true class's images with replacement, as many as the class has, so class counts stay
those of the split and a rare class never vanishes from a resample. The interval is
the bootstrap's percentiles. ``metric_intervals`` computes all four at once from
bincount confusion matrices and rank sums, so 1,000 resamples of 10,000 images take
seconds, not the minutes that 1,000 calls of scikit-learn's metrics would.

Calibration: top-label expected calibration error over equal-width confidence bins,
the per-bin numbers a reliability diagram draws, and temperature scaling (one
scalar ``T`` dividing the logits, fitted by minimising the negative log-likelihood).

Nothing here imports transferlab: evaluation, reports and compare all use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from statsmodels.stats.proportion import proportion_confint

# Resamples drawn per block: bounds memory at (block x images) indices.
BLOCK = 100
# Temperatures searched by fit_temperature, wide enough for any trained network.
TEMPERATURE_BOUNDS = (0.05, 20.0)


# --- intervals ----------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (nan, nan) when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def stratified_resamples(y_true, resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks of bootstrap index rows (block, n), each row drawn within every true class.

    Row r holds, for each class in label order, that class's positions drawn with
    replacement as many times as the class has images. The same ``seed`` gives the
    same rows, so two callers resampling one split see identical resamples.
    """
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y_true == c) for c in np.unique(y_true)]
    for start in range(0, resamples, BLOCK):
        rows = min(BLOCK, resamples - start)
        yield np.concatenate(
            [m[rng.integers(0, len(m), size=(rows, len(m)))] for m in members], axis=1
        )


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` share of the finite ``values``; (nan, nan) if none are."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    probabilities: np.ndarray,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of ``metric(y_true, probabilities)``.

    Resamples where the metric is undefined (it returns nan or raises ValueError, as
    scikit-learn's ROC AUC does for a single class) are skipped.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    values = []
    for block in stratified_resamples(y_true, resamples, seed):
        for rows in block:
            try:
                values.append(float(metric(y_true[rows], probabilities[rows])))
            except ValueError:
                values.append(float("nan"))
    return percentile_interval(np.array(values), confidence)


def metric_intervals(
    y_true,
    probabilities: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """Intervals of accuracy (Wilson), macro-F1, balanced accuracy and ROC AUC (bootstrap).

    The metrics are defined as ``evaluation.metrics.compute_metrics`` defines them:
    macro-F1 over every class of ``probabilities`` (0 for a class never predicted nor
    present), balanced accuracy over the classes present, ROC AUC one-vs-rest macro
    (class 1's scores for two classes), given only when every class is present.
    Missing bounds (too few images) are None.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    correct = int((y_pred == y_true).sum())
    values: dict[str, list] = {"macro_f1": [], "balanced_accuracy": [], "roc_auc": []}
    with_auc = len(np.unique(y_true)) == classes and classes >= 2
    auc = RankAUC(y_true, probabilities) if with_auc else None
    for block in stratified_resamples(y_true, resamples, seed):
        matrices = confusion_matrices(y_true[block], y_pred[block], classes)
        values["macro_f1"].append(macro_f1_of(matrices))
        values["balanced_accuracy"].append(balanced_accuracy_of(matrices))
        if auc is not None:
            values["roc_auc"].append(auc.of_counts(resample_counts(block, len(y_true))))

    intervals = {"accuracy": bounds(wilson_interval(correct, len(y_true), confidence), "wilson")}
    for name, parts in values.items():
        if parts:
            interval = percentile_interval(np.concatenate(parts), confidence)
            intervals[name] = bounds(interval, "bootstrap")
    return intervals


def bounds(interval: tuple[float, float], method: str) -> dict:
    """{"low", "high", "method"}, with None for an undefined bound (JSON has no NaN)."""
    low, high = (None if not np.isfinite(v) else float(v) for v in interval)
    return {"low": low, "high": high, "method": method}


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Confusion matrices (rows, classes, classes) of label rows, by one bincount."""
    rows = y_true.shape[0]
    cells = y_true * classes + y_pred + (np.arange(rows) * classes * classes)[:, None]
    counts = np.bincount(cells.ravel(), minlength=rows * classes * classes)
    return counts.reshape(rows, classes, classes)


def macro_f1_of(matrices: np.ndarray) -> np.ndarray:
    """Macro-F1 of each confusion matrix; a class with no true or predicted image scores 0."""
    tp = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)
    denominator = matrices.sum(axis=2) + matrices.sum(axis=1)  # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def balanced_accuracy_of(matrices: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present, per confusion matrix."""
    tp = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)
    support = matrices.sum(axis=2)
    recall = np.divide(tp, support, out=np.full_like(tp, np.nan), where=support > 0)
    return np.nanmean(recall, axis=1)


def resample_counts(block: np.ndarray, n: int) -> np.ndarray:
    """How often each image appears in each resample row: (rows, n)."""
    rows = block.shape[0]
    flat = (block + (np.arange(rows) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n)


class RankAUC:
    """ROC AUC of many resamples of one split, from rank sums (the Mann-Whitney U).

    A resample is given as counts (how often each image was drawn). For each class the
    negatives are sorted by that class's score once, and each positive's place among
    them found by binary search; a resample's AUC is then its positives' weight times
    the negatives' weight below them (ties counting half), read off one cumulative sum
    of the negatives' counts per resample.
    """

    def __init__(self, y_true: np.ndarray, probabilities: np.ndarray):
        classes = probabilities.shape[1]
        # Two classes: class 1's scores, as scikit-learn's binary roc_auc_score.
        self.columns = [1] if classes == 2 else list(range(classes))
        self.places = []
        for c in self.columns:
            scores = probabilities[:, c]
            positives, negatives = np.flatnonzero(y_true == c), np.flatnonzero(y_true != c)
            negatives = negatives[np.argsort(scores[negatives], kind="stable")]
            ranked = scores[negatives]
            below = np.searchsorted(ranked, scores[positives], side="left")
            up_to = np.searchsorted(ranked, scores[positives], side="right")
            self.places.append((positives, negatives, below, up_to))

    def of_counts(self, counts: np.ndarray) -> np.ndarray:
        """Macro one-vs-rest AUC of each row of ``counts`` (rows, n), integer counts."""
        counts = counts.astype(np.int32)
        total = np.zeros(counts.shape[0])
        for positives, negatives, below, up_to in self.places:
            seen = np.zeros((counts.shape[0], len(negatives) + 1), np.int32)
            np.cumsum(counts[:, negatives], axis=1, out=seen[:, 1:])
            # Twice (negatives below + half the tied ones), per positive image.
            twice_wins = seen[:, below] + seen[:, up_to]
            pos_weights = counts[:, positives]
            wins = (pos_weights * twice_wins).sum(axis=1) / 2
            total += wins / (pos_weights.sum(axis=1) * seen[:, -1])
        return total / len(self.places)


def format_interval(value: float, low: float | None, high: float | None, digits: int = 4) -> str:
    """``0.9815 [0.9612, 0.9913]`` for report tables; the value alone without bounds."""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# --- calibration --------------------------------------------------------------------------


def reliability_bins(y_true, probabilities: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: edges, mean confidence, accuracy and image count.

    Confidence is the top predicted probability; bin b holds confidences in
    (b/bins, (b+1)/bins], the first bin also 0. Empty bins have nan confidence and
    accuracy.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, confidence, minlength=bins) / count
        accuracy = np.bincount(which, correct, minlength=bins) / count
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "confidence": mean_confidence,
        "accuracy": accuracy,
        "count": count,
    }


def expected_calibration_error(y_true, probabilities: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: the image-weighted mean |accuracy - confidence| over the bins."""
    table = reliability_bins(y_true, probabilities, bins)
    used = table["count"] > 0
    gaps = np.abs(table["accuracy"][used] - table["confidence"][used])
    return float((gaps * table["count"][used]).sum() / table["count"].sum())


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log p, with probabilities that underflowed to 0 moved to the smallest float32."""
    tiny = np.finfo(np.float32).tiny
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), tiny))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities of logits divided by ``temperature``.

    log p differs from the logits by a constant per image, which softmax ignores, so the
    saved probabilities are all temperature scaling needs. Keeps the input's dtype.
    """
    probabilities = np.asarray(probabilities)
    scaled = softmax(log_probabilities(probabilities) / float(temperature), axis=1)
    return scaled.astype(probabilities.dtype if probabilities.dtype.kind == "f" else np.float64)


def fit_temperature(y_true, probabilities: np.ndarray) -> float:
    """The temperature minimising the mean negative log-likelihood of ``y_true``.

    Searched on log T (bounded), so T > 1 softens an over-confident model and T < 1
    sharpens an under-confident one; argmax, and so accuracy, never changes.
    """
    y_true = np.asarray(y_true)
    logits = log_probabilities(probabilities)
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y_true].mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))
