"""Rules on the data: the splits' balance.json, audit.json and skipped.csv, the val size."""

from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab.reports.markdown import num
from transferlab.reports.rules.findings import Finding

IMBALANCE_RATIO = 3.0
SPLIT_SHIFT = 0.10  # class share difference between train and val/test
# Below this many images one image moves validation accuracy by more than half a point,
# about what separates late epochs: the set cannot tell them apart.
SMALL_VAL = 200


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
    findings += check_near_duplicates(audit.get("near_duplicates") or {})
    return findings


def check_near_duplicates(block: dict[str, Any]) -> list[Finding]:
    """Near-duplicate groups across splits (make data-health's block of audit.json)."""
    crossing = block.get("cross_split_groups", 0)
    if not crossing:
        return []
    tests = len(block.get("test_images_in_cross_split_groups", []))
    return [
        Finding(
            "near_duplicates",
            "warning",
            f"{crossing} group(s) of near-duplicate images (re-encoded, resized or cropped "
            f"copies) span splits, {tests} test image(s) among them: test scores may be "
            "optimistic",
            "review them in notebooks/09_data_health.ipynb and drop the copies through "
            "data.corrections, or evaluate with eval.exclude_near_duplicates=true",
            {"cross_split_groups": crossing, "test_images": tests},
        )
    ]


def skipped_reasons(skipped: pd.DataFrame) -> pd.Series:
    """Files left out per reason, most common first."""
    return skipped["reason"].fillna("unknown").value_counts()


def check_skipped(skipped: pd.DataFrame) -> list[Finding]:
    """Files the dataset scan left out (skipped.csv: path, reason)."""
    if skipped.empty:
        return []
    reasons = skipped_reasons(skipped)
    shown = "; ".join(f"{reason} ({count})" for reason, count in reasons.head(3).items())
    return [
        Finding(
            "skipped_files",
            "warning",
            f"{len(skipped)} file(s) were left out of the dataset: {shown}",
            "fix or remove them; skipped.csv in the splits folder lists each file with its reason",
            {"count": len(skipped), "reasons": reasons.to_dict()},
        )
    ]


def check_validation_size(val_size: int | None) -> list[Finding]:
    if not val_size or val_size >= SMALL_VAL:
        return []
    return [
        Finding(
            "small_validation",
            "warning",
            f"the validation split has {num(val_size)} images: one image moves validation "
            f"accuracy by 1/{num(val_size)}, so epochs a few images apart cannot be told apart",
            "use a larger validation fraction (data.splits) before comparing epochs or models",
            {"val_size": val_size},
        )
    ]
