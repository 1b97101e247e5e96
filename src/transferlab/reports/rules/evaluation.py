"""Rules on an evaluate run (metrics.json, predictions.csv) and the gap to the target."""

from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab.reports.markdown import num
from transferlab.reports.rules.findings import Finding

# Collapse: the one (two, from 4 classes up) most predicted classes take this share of
# the predictions, and that many more predictions than they have images.
COLLAPSE_SHARE = 0.8
COLLAPSE_EXCESS = 0.2


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


def check_collapse(predictions: pd.DataFrame, split: str = "test") -> list[Finding]:
    """Predictions concentrated on one or two classes that hold far fewer of the images."""
    num_classes = sum(1 for c in predictions if c.startswith("prob_"))
    total = len(predictions)
    if num_classes < 2 or total == 0:
        return []
    top = 1 if num_classes <= 3 else 2
    names = predictions["predicted_class"].value_counts().index[:top].tolist()
    predicted = int(predictions["predicted_class"].isin(names).sum())
    true = int(predictions["true_class"].isin(names).sum())
    if predicted < COLLAPSE_SHARE * total or predicted - true < COLLAPSE_EXCESS * total:
        return []
    return [
        Finding(
            "collapse",
            "critical",
            f"predictions collapse onto {' and '.join(names)}: {predicted} of {total} {split} "
            f"images are predicted as {'it' if top == 1 else 'them'}, while {true} belong to "
            f"{'it' if top == 1 else 'them'}",
            "the model ignores the other classes: check the class balance "
            "(train.class_weight=balanced), lower the learning rate, and check the labels",
            {"classes": names, "predicted": predicted, "true": true, "total": total},
        )
    ]


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
