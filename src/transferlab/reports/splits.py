"""The day checkpoint's Data section, from the splits folder (outputs/splits/<dataset>/).

balance.json gives the classes and split sizes, skipped.csv the files left out and why,
audit.json the leakage audit's result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.config import Config
from transferlab.reports.markdown import table
from transferlab.reports.rules import (
    Finding,
    check_class_balance,
    check_leakage,
    check_skipped,
    skipped_reasons,
)
from transferlab.runs import read_json, splits_dir

CLASSES_SHOWN = 20
SPLITS = ("train", "val", "test")  # balance.json is written with sorted keys


@dataclass
class SplitsFiles:
    folder: Path
    balance: dict[str, dict[str, int]] | None = None
    audit: dict[str, Any] | None = None
    skipped: pd.DataFrame | None = None
    # data.corrections as applied to the splits (corrections.json), if any.
    corrections: dict[str, Any] | None = None


def read_splits_files(cfg: Config) -> SplitsFiles:
    folder = splits_dir(cfg)
    files = SplitsFiles(folder)
    if (folder / "balance.json").is_file():
        files.balance = read_json(folder / "balance.json")
    if (folder / "audit.json").is_file():
        files.audit = read_json(folder / "audit.json")
    if (folder / "corrections.json").is_file():
        files.corrections = read_json(folder / "corrections.json")
    if (folder / "skipped.csv").is_file():
        files.skipped = pd.read_csv(folder / "skipped.csv", dtype=str)
    return files


def data_findings(files: SplitsFiles) -> list[Finding]:
    findings = []
    if files.balance:
        findings += check_class_balance(files.balance)
    if files.audit:
        findings += check_leakage(files.audit)
    if files.skipped is not None:
        findings += check_skipped(files.skipped)
    return [replace(f, where="data") for f in findings]


def data_section(cfg: Config, files: SplitsFiles, class_names: list[str]) -> str:
    """Dataset, classes, split sizes, skipped files with reasons, the leakage audit."""
    if files.balance:
        class_names = list(files.balance.get("train", {})) or class_names
    shown = ", ".join(class_names[:CLASSES_SHOWN]) + (
        ", …" if len(class_names) > CLASSES_SHOWN else ""
    )
    lines = [
        f"Dataset `{cfg.dataset_name}` (`data.kind={cfg.data.kind}`), "
        f"{len(class_names)} classes: {shown or '—'}.",
        "",
    ]
    if files.balance is None:
        lines += [f"_no balance.json in `{files.folder}`: the splits were not made yet_", ""]
    else:
        lines += [split_sizes(files.balance), ""]
    lines += [skipped_text(files), "", audit_text(files.audit), ""]
    lines += [near_duplicates_text(cfg, files), "", corrections_text(files.corrections), ""]
    return "\n".join(lines).rstrip()


def near_duplicates_text(cfg: Config, files: SplitsFiles) -> str:
    """The near-duplicate audit's result, with the cross-split groups' thumbnails."""
    block = (files.audit or {}).get("near_duplicates")
    if block is None:
        # Splits saved before the split audit looked for near-duplicates.
        return "**Near-duplicates:** _not audited (make data-health)_"
    text = (
        f"**Near-duplicates:** {len(block['groups'])} group(s), "
        f"{block['cross_split_groups']} across splits (audit.json)."
    )
    text += not_searched_text(block)
    figure = files.folder / "near_duplicates.png"
    if block["cross_split_groups"] and figure.is_file():
        link = os.path.relpath(figure.resolve(), Path(cfg.report.output_dir).resolve())
        text += f"\n\n![near-duplicates across splits]({link})"
    return text


def not_searched_text(block: dict[str, Any]) -> str:
    """Which images the perceptual search left out, or "" when it took every one."""
    left_out = {k: v for k, v in (block.get("not_searched") or {}).items() if v}
    if not left_out:
        return ""
    parts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left_out.items())
    return (
        f" Left out of the perceptual search (a copy is no closer than a stranger there): "
        f"{parts}; byte-identical copies are still found."
    )


def corrections_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "**Corrections:** none (`data.corrections` not set)."
    text = (
        f"**Corrections:** `{record['file']}`: {len(record['dropped'])} image(s) dropped, "
        f"{len(record['relabelled'])} relabelled."
    )
    if record.get("test_changed"):
        text += " The test split changed: scores from before are on other images or labels."
    return text


def split_sizes(balance: dict[str, dict[str, int]]) -> str:
    rows = []
    for split in sorted(balance, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS)):
        counts = balance[split]
        if not counts:
            continue
        small, big = min(counts, key=counts.get), max(counts, key=counts.get)
        rows.append(
            [split, sum(counts.values()), f"{small} ({counts[small]})", f"{big} ({counts[big]})"]
        )
    return table(["Split", "Images", "Smallest class (images)", "Largest class (images)"], rows)


def skipped_text(files: SplitsFiles) -> str:
    if files.skipped is None:
        return "**Skipped files:** _no skipped.csv_"
    if files.skipped.empty:
        return "**Skipped files:** none."
    reasons = skipped_reasons(files.skipped)
    return (
        f"**Skipped files:** {len(files.skipped)}, listed in `{files.folder / 'skipped.csv'}`.\n\n"
        + table(["Reason", "Files"], [[reason, count] for reason, count in reasons.items()])
    )


def audit_text(audit: dict[str, Any] | None) -> str:
    if audit is None:
        return "**Leakage audit:** _no audit.json_"
    duplicates = audit.get("duplicates_across_splits", [])
    groups = audit.get("shared_groups", [])
    if not duplicates and not groups:
        return (
            "**Leakage audit:** clean: no image is byte-identical across splits, "
            "and no group is in more than one split."
        )
    return (
        f"**Leakage audit:** {len(duplicates)} image(s) byte-identical across splits, "
        f"{len(groups)} group(s) in more than one split (see audit.json)."
    )
