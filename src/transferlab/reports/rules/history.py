"""Rules on a training run's per-epoch history (metrics.csv), and its verdict.

Each rule reads the history as a DataFrame, and the run's ``RunInfo`` where that helps
name the setting to change, and returns ``Finding``s whose numbers all come from them.
``diagnose`` runs every rule and picks the verdict: the most actionable rule that fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from transferlab.reports.markdown import num
from transferlab.reports.rules.data import check_validation_size
from transferlab.reports.rules.findings import SEVERITY_ORDER, Finding, RunInfo

# Thresholds, in one place so the report and the tests agree on them.
MIN_EPOCHS = 3  # fewer epochs than this: too early to judge
GAP_SEVERE = 0.10  # train - val accuracy at the last epoch
GAP_MILD = 0.05
LOSS_RISE = 1.2  # last val loss / lowest val loss
REPEAT_SHARE = 0.25  # share of epochs with the exact same validation metrics
STALL_EPOCHS = 5
OSCILLATION = 0.05  # mean epoch-to-epoch change of val accuracy
# Accuracy within this share of the way from chance to 1 is chance level (0.145 for 10
# classes, 0.525 for 2).
CHANCE_MARGIN = 0.05
# Still improving: the last epochs beat the earlier best by this much, and by more than
# the metric's own epoch-to-epoch noise.
MIN_GAIN = 0.01
DEFAULT_PATIENCE = 5
# Diverging: training loss at DIVERGE_FACTOR times its lowest and up by DIVERGE_RISE of
# its first epoch's value (near-zero losses jitter by large factors)...
DIVERGE_FACTOR = 3.0
DIVERGE_RISE = 0.5
# ...or accuracy that climbed CLEARLY_ABOVE of the way from chance to 1 and then kept at
# most FALLEN_TO of that gain.
CLEARLY_ABOVE = 0.2
FALLEN_TO = 0.25
# Underfitting: training accuracy below UNDERFIT_LEVEL of the way from chance to 1, and
# flat over the second half of at least FLAT_EPOCHS epochs: within FLAT_GAIN of the
# first half's best, spread over less than FLAT_RANGE (a bouncing one is oscillating).
UNDERFIT_LEVEL = 0.6
FLAT_GAIN = 0.02
FLAT_RANGE = 0.05
FLAT_EPOCHS = 6
VAL_ABOVE_SHARE = 0.8  # share of epochs with validation accuracy above training's

# The verdict is the first of these rules that fired: the most actionable first.
VERDICT_ORDER = [
    ("diverging", "diverging"),
    ("chance_level", "chance-level accuracy"),
    ("overfitting", "overfitting"),
    ("underfitting", "underfitting"),
    ("not_converged", "not converged"),
    ("fine_tuning_hurt", "fine-tuning hurt"),
    ("repeated_validation", "repeated validation metrics"),
    ("val_loss_rising", "validation loss rising"),
    ("stalled", "stalled"),
    ("oscillating", "oscillating validation"),
    ("too_early", "too early to judge"),
]
RANK = {rule: i for i, (rule, _) in enumerate(VERDICT_ORDER)}
# When a rule fires, these rules tell part of its story, or a wrong one (a diverged
# model repeats its validation metrics because it predicts one class, not because the
# validation set is small), so they are left out.
TOLD_BY = {
    "diverging": {
        "underfitting",
        "repeated_validation",
        "stalled",
        "oscillating",
        "best_epoch_early",
        "too_early",
    },
    "chance_level": {"underfitting", "repeated_validation", "stalled"},
    "overfitting": {"val_loss_rising"},
    "underfitting": {"stalled", "repeated_validation", "best_epoch_early"},
}


@dataclass
class Diagnosis:
    verdict: str
    findings: list[Finding]
    # The finding the verdict names; None when no verdict rule fired.
    headline: Finding | None = None

    @property
    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]


def priority(finding: Finding) -> tuple[int, int]:
    """Sort key: most severe first, then the verdict order."""
    return SEVERITY_ORDER[finding.severity], RANK.get(finding.rule, len(RANK))


def diagnose(history: pd.DataFrame, info: RunInfo | None = None) -> Diagnosis:
    """Run every history rule; the verdict is the most actionable rule that fired."""
    info = info or RunInfo()
    history = history.sort_values("epoch").reset_index(drop=True)
    # Rules other than divergence read the epochs whose losses are numbers.
    finite = finite_epochs(history)
    findings = [
        *check_diverging(history, info),
        *check_chance_level(finite, info.num_classes),
        *check_overfitting(finite),
        *check_underfitting(finite, info),
        *check_not_converged(finite, info),
        *check_phase2_against_phase1(finite, info),
        *check_val_above_train(finite),
        *check_val_loss_rising(finite),
        *check_best_epoch_early(finite, info),
        *check_repeated_validation(finite),
        *check_stalled(finite, info),
        *check_oscillating(finite),
        *check_too_early(finite, info),
        *check_validation_size(info.val_size),
    ]
    fired = {f.rule for f in findings}
    told = set().union(*(TOLD_BY.get(rule, set()) for rule in fired))
    findings = sorted((f for f in findings if f.rule not in told), key=priority)
    headline = min(
        (f for f in findings if f.rule in RANK), key=lambda f: RANK[f.rule], default=None
    )
    verdict = dict(VERDICT_ORDER)[headline.rule] if headline else "no problems found"
    return Diagnosis(verdict, findings, headline)


def finite_epochs(history: pd.DataFrame) -> pd.DataFrame:
    losses = [c for c in ("loss", "val_loss") if c in history]
    keep = np.isfinite(history[losses].to_numpy(dtype=float)).all(axis=1)
    return history[keep].reset_index(drop=True)


def monitored(history: pd.DataFrame, monitor: str | None = None) -> str:
    for column in (monitor, "val_accuracy", "val_macro_f1", "val_f1"):
        if column and column in history:
            return column
    raise ValueError(f"history has no validation metric column (columns: {list(history.columns)})")


def epoch_of(history: pd.DataFrame, row: int) -> int:
    return int(history["epoch"].iloc[row])


def train_longer(info: RunInfo, epochs_run: int) -> str:
    """Let an unfinished run finish, or plan more epochs for the phase."""
    unfinished = info.stop_reason in (None, "", "interrupted")
    if info.epochs and epochs_run < info.epochs and unfinished:
        return f"let it run its planned {info.epochs} epochs (the same command resumes it)"
    setting = f"{info.phase}.epochs" if info.phase else "the phase's epochs"
    return f"train longer: raise {setting} (e.g. to {2 * epochs_run})"


def setting(section: str | None, key: str, value: Any) -> str:
    """``phase2.learning_rate, now 0.0001``; the bare setting when its value is unknown."""
    name = f"{section}.{key}" if section else key
    if value is None:
        return name
    return f"{name}, now {value if isinstance(value, str) else num(value)}"


# --- history rules ------------------------------------------------------------------


def check_too_early(history: pd.DataFrame, info: RunInfo | None = None) -> list[Finding]:
    n = len(history)
    if n >= MIN_EPOCHS:
        return []
    trend, improving = "", False
    if n >= 2 and "val_loss" in history:
        first, last = history["val_loss"].iloc[0], history["val_loss"].iloc[-1]
        improving = bool(last < first)
        trend = " and still improving" if improving else ""
        trend += f" (validation loss {num(first)} → {num(last)})"
    action = "let training run its planned epochs before drawing conclusions"
    if improving:
        action = train_longer(info or RunInfo(), n) + ", then judge"
    return [
        Finding(
            "too_early",
            "info",
            f"only {n} epoch(s) so far{trend}: too early to judge",
            action,
            {"epochs": n},
        )
    ]


def check_not_converged(history: pd.DataFrame, info: RunInfo) -> list[Finding]:
    """The monitored metric still climbing at the end, by more than its own noise."""
    n = len(history)
    if n < MIN_EPOCHS or info.stop_reason == "early_stopping":
        return []  # early stopping ending a run is what "converged" means here
    column = monitored(history, info.monitor)
    values = history[column]
    # The best must come in the last epochs: at most a patience, and a third of the run
    # so that a climb followed by a plateau does not count as still improving.
    window = max(2, min(info.patience or DEFAULT_PATIENCE, n // 3))
    before, recent = values.iloc[:-window].max(), values.iloc[-window:].max()
    gain = recent - before
    if not gain >= max(MIN_GAIN, typical_drop(values)) - 1e-9:
        return []
    best = int(values.idxmax())
    return [
        Finding(
            "not_converged",
            "warning",
            f"still improving: best {column} {num(values.iloc[best])} at epoch "
            f"{epoch_of(history, best)} of {epoch_of(history, -1)}, up {num(gain)} in the "
            f"last {window} epochs",
            train_longer(info, epoch_of(history, -1)),
            {"best_epoch": epoch_of(history, best), "gain": float(gain)},
        )
    ]


def typical_drop(values: pd.Series) -> float:
    """The mean size of the metric's epoch-to-epoch falls: its noise (0 if it never fell)."""
    steps = np.diff(values.to_numpy(dtype=float))
    falls = -steps[steps < 0]
    return float(falls.mean()) if len(falls) else 0.0


def check_diverging(history: pd.DataFrame, info: RunInfo) -> list[Finding]:
    """NaN losses, a training loss that blows up, or accuracy falling back to chance."""
    losses = [c for c in ("loss", "val_loss") if c in history]
    bad = ~np.isfinite(history[losses].to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        text = f"the loss became NaN or infinite at epoch {epoch_of(history, int(np.argmax(bad)))}"
    elif info.stop_reason == "nan_loss":
        when = f"after epoch {epoch_of(history, -1)}" if len(history) else "in the first epoch"
        text = f"the loss became NaN {when}"
    else:
        parts = [*loss_blowup(history), *accuracy_fallback(history, info.num_classes)]
        if not parts:
            return []
        text = " and ".join(parts)
    return [
        Finding(
            "diverging",
            "critical",
            f"training diverged: {text}",
            "lower the learning rate tenfold "
            f"({setting(info.phase, 'learning_rate', info.learning_rate)}), and clip gradients "
            "(train.clip_norm)",
        )
    ]


def loss_blowup(history: pd.DataFrame) -> list[str]:
    if "loss" not in history or len(history) < 2:
        return []
    loss = history["loss"]
    low, last = int(loss.idxmin()), len(history) - 1
    if low == last or loss.iloc[last] < DIVERGE_FACTOR * loss.iloc[low]:
        return []
    if loss.iloc[last] - loss.iloc[low] < DIVERGE_RISE * loss.iloc[0]:
        return []
    return [
        f"training loss rose from {num(loss.iloc[low])} (epoch {epoch_of(history, low)}) "
        f"to {num(loss.iloc[last])} (epoch {epoch_of(history, last)})"
    ]


def accuracy_fallback(history: pd.DataFrame, num_classes: int | None) -> list[str]:
    column = next((c for c in ("accuracy", "val_accuracy") if c in history), None)
    if not column or not num_classes or num_classes < 2 or len(history) < 2:
        return []
    chance = 1.0 / num_classes
    values = history[column]
    peak, last = int(values.idxmax()), len(history) - 1
    gain = values.iloc[peak] - chance
    if peak == last or gain < CLEARLY_ABOVE * (1 - chance):
        return []
    if values.iloc[last] - chance > FALLEN_TO * gain:
        return []
    name = "training accuracy" if column == "accuracy" else "validation accuracy"
    return [
        f"{name} fell from {num(values.iloc[peak])} (epoch {epoch_of(history, peak)}) to "
        f"{num(values.iloc[last])} (epoch {epoch_of(history, last)}), back near chance "
        f"({num(chance)} for {num_classes} classes)"
    ]


def check_underfitting(history: pd.DataFrame, info: RunInfo) -> list[Finding]:
    """Training accuracy itself low and flat, validation close to it."""
    n = len(history)
    if not {"accuracy", "val_accuracy"} <= set(history) or n < FLAT_EPOCHS:
        return []
    chance = 1.0 / info.num_classes if info.num_classes else 0.0
    train, val = history["accuracy"], history["val_accuracy"]
    half = n // 2
    recent = train.iloc[half:].max()
    if recent >= chance + UNDERFIT_LEVEL * (1 - chance):
        return []
    if abs(recent - train.iloc[:half].max()) >= FLAT_GAIN:
        return []  # still climbing (not converged) or falling back (diverging): not stuck
    if recent - train.iloc[half:].min() >= FLAT_RANGE:
        return []
    if abs(train.iloc[-1] - val.iloc[-1]) >= GAP_MILD:
        return []
    return [
        Finding(
            "underfitting",
            "warning",
            f"underfitting: training accuracy itself is low and flat, at most {num(recent)} "
            f"from epoch {epoch_of(history, half)} to {epoch_of(history, -1)}, with validation "
            f"close to it ({num(val.iloc[-1])} vs {num(train.iloc[-1])} at epoch "
            f"{epoch_of(history, -1)})",
            "the model cannot fit even its training images; give it more to learn with: "
            + more_capacity(info),
            {"train_accuracy": float(recent)},
        )
    ]


def more_capacity(info: RunInfo) -> str:
    if info.phase == "phase1" and not info.unfreeze_from:
        unfreeze = "fine-tune the backbone (phase 2, or phase1.unfreeze_from)"
    else:
        unfreeze = (
            f"unfreeze more stages ({setting(info.phase, 'unfreeze_from', info.unfreeze_from)})"
        )
    return (
        f"{unfreeze}, raise the learning rate "
        f"({setting(info.phase, 'learning_rate', info.learning_rate)}), use larger images "
        f"({setting('model', 'image_size', info.image_size)}), and train longer"
    )


def check_val_above_train(history: pd.DataFrame) -> list[Finding]:
    """Validation consistently above training: regularization at work, not a problem."""
    n = len(history)
    if not {"accuracy", "val_accuracy"} <= set(history) or n < MIN_EPOCHS:
        return []
    difference = history["val_accuracy"] - history["accuracy"]
    above = difference > 0
    if above.mean() < VAL_ABOVE_SHARE or not above.iloc[-1] or difference.mean() < MIN_GAIN:
        return []
    return [
        Finding(
            "val_above_train",
            "info",
            f"validation accuracy is above training accuracy in {int(above.sum())} of {n} "
            f"epochs ({num(history['val_accuracy'].iloc[-1])} vs "
            f"{num(history['accuracy'].iloc[-1])} at epoch {epoch_of(history, -1)}): dropout, "
            "augmentation and label smoothing act only on training batches, so this is "
            "expected, not a problem",
        )
    ]


def check_phase2_against_phase1(history: pd.DataFrame, info: RunInfo) -> list[Finding]:
    if info.phase != "phase2" or info.phase1_best is None or history.empty:
        return []
    column = monitored(history, info.monitor)
    return check_fine_tuning(info.phase1_best, float(history[column].max()), column, info)


def check_fine_tuning(
    phase1_best: float | None, phase2_best: float | None, column: str, info: RunInfo
) -> list[Finding]:
    """Phase 2's best below phase 1's: "fine-tuning hurt" only if a paired test says so.

    ``info.phase1_test`` tests phase 2 against phase 1 image by image on the same
    validation images; the verdict needs p < compare.alpha. A drop the test cannot tell
    from noise, or one with no test, is reported as such, never as a verdict.
    """
    if phase1_best is None or phase2_best is None or not phase2_best < phase1_best:
        return []
    drop = (
        f"phase 2's best {column} {num(phase2_best)} is below phase 1's {num(phase1_best)} "
        f"({num(phase2_best - phase1_best)})"
    )
    kept = "; phase 1's model stays the experiment's best" if info.kept_phase1 else ""
    evidence = {"phase1_best": phase1_best, "phase2_best": phase2_best}
    test = info.phase1_test
    if not test or "untested" in test:
        why = test["untested"] if test else "no per-image validation predictions"
        return [
            Finding(
                "fine_tuning_untested",
                "info",
                f"{drop}{kept}; untested ({why}), so the drop may be noise",
                "re-run both phases: training now writes val_predictions.csv, on which the "
                "report tests phase 2 against phase 1 image by image",
                evidence,
            )
        ]
    part = test["macro_f1" if "f1" in column else "accuracy"]
    evidence |= {"test": part}
    if part["detectable"] and part["difference"] < 0:
        return [
            Finding(
                "fine_tuning_hurt",
                "warning",
                f"fine-tuning hurt: {drop}; on the same validation images {part['verdict']}{kept}",
                "fine-tune more gently: lower the learning rate "
                f"({setting('phase2', 'learning_rate', info.learning_rate)}), unfreeze fewer "
                f"stages ({setting('phase2', 'unfreeze_from', info.unfreeze_from)}), or add "
                "augmentation",
                evidence,
            )
        ]
    return [
        Finding(
            "fine_tuning_no_change",
            "info",
            f"{drop}, but the paired test finds {part['verdict']}{kept}",
            "to tell the phases apart, validate on more images (a larger validation split, "
            "or cross-validation)",
            evidence,
        )
    ]


def check_overfitting(history: pd.DataFrame) -> list[Finding]:
    if not {"accuracy", "val_accuracy"} <= set(history) or history.empty:
        return []
    train, val = history["accuracy"].iloc[-1], history["val_accuracy"].iloc[-1]
    gap = train - val
    rising = val_loss_rise(history)
    if gap < GAP_SEVERE and not (rising and gap >= GAP_MILD):
        return []
    message = ("severe overfitting: " if gap >= GAP_SEVERE else "overfitting: ") + (
        f"train accuracy {num(train)} vs validation {num(val)} at epoch {epoch_of(history, -1)} "
        f"(gap {num(gap)})"
    )
    if rising:
        message += "; " + rising["text"]
    return [
        Finding(
            "overfitting",
            "critical" if gap >= GAP_SEVERE else "warning",
            message,
            "stop at the best epoch and regularize: more augmentation, dropout or weight decay, "
            "fewer unfrozen layers, a lower learning rate, or more data",
            {"train_accuracy": train, "val_accuracy": val, "gap": gap},
        )
    ]


def val_loss_rise(history: pd.DataFrame) -> dict[str, Any] | None:
    """Validation loss up since its lowest epoch while training loss went down."""
    if not {"loss", "val_loss"} <= set(history) or len(history) < 2:
        return None
    low = int(history["val_loss"].idxmin())
    last = len(history) - 1
    val_low, val_last = history["val_loss"].iloc[low], history["val_loss"].iloc[last]
    loss_low, loss_last = history["loss"].iloc[low], history["loss"].iloc[last]
    if low == last or val_last < val_low * LOSS_RISE or loss_last >= loss_low:
        return None
    every = low == 0 and bool((np.diff(history["val_loss"]) > 0).all())
    text = (
        f"validation loss rose from {num(val_low)} (epoch {epoch_of(history, low)}) to "
        f"{num(val_last)} (epoch {epoch_of(history, last)})"
        + (", every epoch," if every else "")
        + f" while training loss fell from {num(loss_low)} to {num(loss_last)}"
    )
    return {"text": text, "low_epoch": epoch_of(history, low), "every_epoch": every}


def check_val_loss_rising(history: pd.DataFrame) -> list[Finding]:
    rise = val_loss_rise(history)
    if not rise:
        return []
    return [
        Finding(
            "val_loss_rising",
            "warning",
            rise["text"],
            "the model grows over-confident on validation images: keep the best epoch, "
            "regularize, or lower the learning rate",
            rise,
        )
    ]


def check_best_epoch_early(history: pd.DataFrame, info: RunInfo | None = None) -> list[Finding]:
    n = len(history)
    info = info or RunInfo()
    if n < MIN_EPOCHS or info.stop_reason == "early_stopping":
        return []  # early stopping already kept the best epoch
    column = monitored(history, info.monitor)
    best = int(history[column].idxmax())  # the first epoch reaching the best value
    if n - 1 - best < max(2, 0.3 * n):
        return []
    return [
        Finding(
            "best_epoch_early",
            "warning",
            f"best {column} {num(history[column].iloc[best])} at epoch {epoch_of(history, best)} "
            f"of {epoch_of(history, -1)}: later epochs did not improve it",
            "use early stopping with restored best weights, or fewer epochs",
            {"best_epoch": epoch_of(history, best)},
        )
    ]


def check_repeated_validation(history: pd.DataFrame) -> list[Finding]:
    """The exact same validation metrics in many epochs: the set is too small to tell them apart."""
    columns = [c for c in history if c.startswith("val_") and c != "val_loss"]
    n = len(history)
    if not columns or n < MIN_EPOCHS:
        return []
    rows = history[columns].round(6).apply(tuple, axis=1)
    counts = rows.value_counts(sort=False)
    values, count = max(counts.items(), key=lambda kv: kv[1])
    if count < max(3, REPEAT_SHARE * n):
        return []
    epochs = history["epoch"][rows == values].astype(int).tolist()
    shown = " / ".join(num(v) for v in values)
    return [
        Finding(
            "repeated_validation",
            "warning",
            f"the validation metrics repeat the exact same values ({shown} for "
            f"{', '.join(columns)}) in {count} of {n} epochs: the validation set is too small "
            "to tell epochs apart, so its numbers are coarse and the best epoch is mostly noise",
            "use a larger validation split (or cross-validation) before comparing epochs or models",
            {"values": list(values), "count": int(count), "epochs": epochs, "columns": columns},
        )
    ]


def check_stalled(history: pd.DataFrame, info: RunInfo | None = None) -> list[Finding]:
    n = len(history)
    info = info or RunInfo()
    if n < STALL_EPOCHS + 1 or info.stop_reason == "early_stopping":
        return []  # early stopping saw the stall and kept the best epoch: the plan worked
    column = monitored(history, info.monitor)
    tail = history[column].iloc[-STALL_EPOCHS:]
    before = history[column].iloc[:-STALL_EPOCHS].max()
    if tail.max() > before or tail.max() - tail.min() > 0.01:
        return []
    return [
        Finding(
            "stalled",
            "warning",
            f"{column} has not improved on {num(before)} in the last {STALL_EPOCHS} epochs "
            f"(between {num(tail.min())} and {num(tail.max())})",
            "training has converged or the learning rate is too low: stop, or change the "
            "schedule or the unfrozen layers",
            {"best_before": before},
        )
    ]


def check_oscillating(history: pd.DataFrame) -> list[Finding]:
    if "val_accuracy" not in history or len(history) < 6:
        return []
    val = history["val_accuracy"].to_numpy()
    steps = np.diff(val)
    # Up-down-up: steps that keep changing direction, and big ones where they turn. The
    # early climb does not count: a first epoch far below the rest is progress, not noise.
    turning = steps[:-1] * steps[1:] < 0
    reversals = np.abs(steps[1:][turning])
    if turning.sum() < len(steps) / 2 or reversals.mean() < OSCILLATION:
        return []
    settled = val[int(np.argmax(turning)) :]
    return [
        Finding(
            "oscillating",
            "warning",
            f"validation accuracy jumps between {num(settled.min())} and {num(settled.max())} "
            "from epoch to epoch",
            "lower the learning rate (or add a schedule), or use a larger validation split",
            {"min": float(settled.min()), "max": float(settled.max())},
        )
    ]


def check_chance_level(history: pd.DataFrame, num_classes: int | None) -> list[Finding]:
    if not num_classes or num_classes < 2 or "val_accuracy" not in history or history.empty:
        return []
    best = history["val_accuracy"].max()
    chance = 1.0 / num_classes
    if best > chance + CHANCE_MARGIN * (1 - chance):
        return []
    return [
        Finding(
            "chance_level",
            "critical",
            f"best validation accuracy {num(best)} is at chance level for {num_classes} classes "
            f"({num(chance)}): the pipeline is broken, not the features weak",
            "check preprocessing (the backbone's own preprocess_input, applied once, on 0..255 "
            "pixels), BatchNorm (the frozen backbone called with training=False), and labels "
            "(aligned with their images, same class order in every split)",
            {"best": best, "chance": chance},
        )
    ]
