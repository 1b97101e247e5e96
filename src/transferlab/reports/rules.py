"""Diagnostic rules: what a careful reader concludes from a run's files.

Each rule reads plain data (a metrics.csv history as a DataFrame, balance.json,
audit.json, metrics.json) and returns ``Finding``s: a rule id, a severity, a
message whose numbers all come from that data, and the usual next action.
``diagnose`` runs the history rules and picks the headline verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from transferlab.reports.markdown import num

# Thresholds, in one place so the report and the tests agree on them.
MIN_EPOCHS = 3  # fewer epochs than this: too early to judge
GAP_SEVERE = 0.10  # train - val accuracy at the last epoch
GAP_MILD = 0.05
LOSS_RISE = 1.2  # last val loss / lowest val loss
REPEAT_SHARE = 0.25  # share of epochs with the exact same validation metrics
STALL_EPOCHS = 5
OSCILLATION = 0.05  # mean epoch-to-epoch change of val accuracy
CHANCE_MARGIN = 0.05
IMBALANCE_RATIO = 3.0
SPLIT_SHIFT = 0.10  # class share difference between train and val/test

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
# The verdict is the first of these rules that fired.
VERDICT_ORDER = [
    ("chance_level", "chance-level accuracy"),
    ("overfitting", "overfitting"),
    ("repeated_validation", "repeated validation metrics"),
    ("val_loss_rising", "validation loss rising"),
    ("stalled", "stalled"),
    ("oscillating", "oscillating validation"),
    ("too_early", "too early to judge"),
]


@dataclass
class Finding:
    rule: str
    severity: str  # "critical", "warning" or "info"
    message: str
    action: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Diagnosis:
    verdict: str
    findings: list[Finding]

    @property
    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]


def diagnose(
    history: pd.DataFrame, num_classes: int | None = None, monitor: str | None = None
) -> Diagnosis:
    """Run every history rule; the verdict is the most important rule that fired."""
    history = history.sort_values("epoch").reset_index(drop=True)
    findings = [
        *check_chance_level(history, num_classes),
        *check_overfitting(history),
        *check_val_loss_rising(history),
        *check_best_epoch_early(history, monitor),
        *check_repeated_validation(history),
        *check_stalled(history, monitor),
        *check_oscillating(history),
        *check_too_early(history),
    ]
    if any(f.rule == "overfitting" for f in findings):
        # The overfitting message already tells the validation-loss story.
        findings = [f for f in findings if f.rule != "val_loss_rising"]
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    fired = {f.rule for f in findings}
    verdict = next((name for rule, name in VERDICT_ORDER if rule in fired), "no problems found")
    return Diagnosis(verdict, findings)


def monitored(history: pd.DataFrame, monitor: str | None = None) -> str:
    for column in (monitor, "val_accuracy", "val_macro_f1", "val_f1"):
        if column and column in history:
            return column
    raise ValueError(f"history has no validation metric column (columns: {list(history.columns)})")


def epoch_of(history: pd.DataFrame, row: int) -> int:
    return int(history["epoch"].iloc[row])


# --- history rules ------------------------------------------------------------------


def check_too_early(history: pd.DataFrame, min_epochs: int = MIN_EPOCHS) -> list[Finding]:
    n = len(history)
    if n >= min_epochs:
        return []
    trend = ""
    if n >= 2 and "val_loss" in history:
        first, last = history["val_loss"].iloc[0], history["val_loss"].iloc[-1]
        trend = " and still improving" if last < first else ""
        trend += f" (validation loss {num(first)} → {num(last)})"
    return [
        Finding(
            "too_early",
            "info",
            f"only {n} epoch(s) so far{trend}: too early to judge",
            "let training run its planned epochs before drawing conclusions",
            {"epochs": n},
        )
    ]


def check_overfitting(history: pd.DataFrame) -> list[Finding]:
    if not {"accuracy", "val_accuracy"} <= set(history):
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


def check_best_epoch_early(history: pd.DataFrame, monitor: str | None = None) -> list[Finding]:
    column = monitored(history, monitor)
    n = len(history)
    best = int(history[column].idxmax())  # the first epoch reaching the best value
    if n < MIN_EPOCHS or n - 1 - best < max(2, 0.3 * n):
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


def check_stalled(history: pd.DataFrame, monitor: str | None = None) -> list[Finding]:
    column = monitored(history, monitor)
    n = len(history)
    if n < STALL_EPOCHS + 1:
        return []
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
    if not num_classes or num_classes < 2 or "val_accuracy" not in history:
        return []
    best = history["val_accuracy"].max()
    chance = 1.0 / num_classes
    if best > chance + CHANCE_MARGIN:
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


# --- split and evaluation rules --------------------------------------------------------


def check_class_balance(balance: dict[str, dict[str, int]]) -> list[Finding]:
    """Imbalance inside the training split, and class shares that differ between splits."""
    findings = []
    train = balance.get("train", {})
    counts = {c: n for c, n in train.items() if n > 0}
    if counts and max(counts.values()) >= IMBALANCE_RATIO * min(counts.values()):
        big = max(counts, key=counts.get)
        small = min(counts, key=counts.get)
        findings.append(
            Finding(
                "class_imbalance",
                "warning",
                f"the training split is imbalanced: {big} has {counts[big]} images, "
                f"{small} {counts[small]}",
                "set train.class_weight=balanced and watch macro-F1 and per-class recall",
                {"largest": big, "smallest": small},
            )
        )
    total = sum(train.values())
    for split in ("val", "test"):
        other = balance.get(split, {})
        other_total = sum(other.values())
        if not total or not other_total:
            continue
        missing = sorted(c for c in train if train[c] > 0 and other.get(c, 0) == 0)
        shifted = sorted(
            c for c in train if abs(train[c] / total - other.get(c, 0) / other_total) >= SPLIT_SHIFT
        )
        if missing or shifted:
            names = missing or shifted
            what = "has no images of" if missing else "has different class shares than train for"
            findings.append(
                Finding(
                    "split_imbalance",
                    "warning",
                    f"the {split} split {what} {', '.join(names[:5])}",
                    "re-split with stratification (or larger val/test fractions)",
                    {"split": split, "classes": names},
                )
            )
    return findings


def check_leakage(audit: dict[str, Any]) -> list[Finding]:
    duplicates = audit.get("duplicates_across_splits", [])
    groups = audit.get("shared_groups", [])
    findings = []
    if duplicates:
        findings.append(
            Finding(
                "leakage",
                "critical",
                f"{len(duplicates)} image(s) appear byte-identical in more than one split: "
                "test and validation scores are optimistic",
                "remove the duplicates (see audit.json) and re-split",
                {"duplicates": len(duplicates)},
            )
        )
    if groups:
        findings.append(
            Finding(
                "leakage",
                "critical",
                f"{len(groups)} group(s) appear in more than one split: the model may recognise "
                "subjects rather than classes",
                "use a group-exclusive split (data.group_column)",
                {"shared_groups": len(groups)},
            )
        )
    return findings


def check_evaluation(metrics: dict[str, Any]) -> list[Finding]:
    """Weakest and strongest classes, most confused pairs, TTA against plain."""
    per_class = metrics.get("per_class", {})
    findings = []
    if metrics.get("weakest_classes"):
        weak = ", ".join(f"{c} (F1 {num(per_class[c]['f1'])})" for c in metrics["weakest_classes"])
        strong = ", ".join(
            f"{c} (F1 {num(per_class[c]['f1'])})" for c in metrics.get("strongest_classes", [])
        )
        findings.append(
            Finding("weakest_classes", "info", f"weakest classes: {weak}; strongest: {strong}")
        )
    pairs = metrics.get("most_confused", [])
    if pairs:
        text = "; ".join(f"{p['true']} → {p['predicted']} ({p['count']})" for p in pairs[:3])
        findings.append(
            Finding("most_confused", "info", f"most confused (true → predicted, images): {text}")
        )
    if "tta_accuracy" in metrics:
        findings.append(
            Finding(
                "tta",
                "info",
                f"test-time augmentation ({metrics['tta_passes']} extra pass(es)): accuracy "
                f"{num(metrics['tta_accuracy'])} vs plain {num(metrics['accuracy'])}",
            )
        )
    return findings


def gap_to_target(achieved: float, target: float, what: str) -> Finding:
    """How far ``achieved`` (e.g. test accuracy) is from the config's target accuracy."""
    gap = target - achieved
    if gap <= 0:
        return Finding(
            "target_met", "info", f"{what} {num(achieved)} meets the target {num(target)}"
        )
    return Finding(
        "target_gap",
        "warning",
        f"{what} {num(achieved)} is {num(gap)} below the target {num(target)}",
        "close the gap: fine-tune more stages, augment, or train longer at a lower learning rate",
        {"gap": gap},
    )
