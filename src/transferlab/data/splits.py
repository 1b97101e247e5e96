"""Train/val/test splits, stratified by class and group-exclusive, persisted, audited for leakage.

Splits are written to ``outputs/splits/<dataset>/`` the first time and read back
afterwards, so phase 2 and evaluation see exactly phase 1's split.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from transferlab.config import Config
from transferlab.data.core import SPLIT_NAMES, DataError
from transferlab.data.dataset import ImageDataset
from transferlab.data.health.duplicates import (
    audit_near_duplicates,
    split_table,
    warn_about_near_duplicates,
)
from transferlab.runs import read_json, splits_dir, write_json, write_text


@dataclass
class Splits:
    """The three split tables (sample_id, label, class_name, group) and where they live."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    directory: Path

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in SPLIT_NAMES:
            raise KeyError(f"split {name!r}: use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


def split_settings(cfg: Config, dataset: ImageDataset) -> dict:
    """What a split depends on; a saved split is reused only when these match."""
    return {
        "dataset": cfg.dataset_name,
        "kind": cfg.data.kind,
        "data_dir": cfg.data.data_dir,
        "subset_per_class": cfg.data.subset_per_class,
        "fractions": cfg.data.splits,
        "group_column": cfg.data.group_column,
        "seed": cfg.seed,
        "num_samples": len(dataset.table),
        "class_names": dataset.class_names,
        # Only with data.corrections, so splits saved before it existed still match.
        **({"corrections": dataset.corrections.record()} if dataset.corrections else {}),
    }


# Settings a corrections file changes: the saved splits are then adjusted, not re-made.
CORRECTED = {"corrections", "num_samples"}


def prepare_splits(cfg: Config, dataset: ImageDataset) -> Splits:
    """Load the saved splits for this config, or make, audit and save new ones."""
    directory = splits_dir(cfg)
    settings = split_settings(cfg, dataset)
    if (directory / "settings.json").is_file():
        saved = read_json(directory / "settings.json")
        changed = sorted(k for k in {*settings, *saved} if saved.get(k) != settings.get(k))
        if changed and set(changed) <= CORRECTED:
            return correct_saved_splits(cfg, directory, dataset, settings)
        if changed:
            raise DataError(
                f"the splits saved in {directory} were made with other settings "
                f"({', '.join(changed)}). Delete that folder to make new splits (phase 1 "
                "must then be re-run), or set data.name to keep both"
            )
        return read_splits(directory)
    assignment = assign_splits(dataset, cfg.data.splits, cfg.seed)
    splits = write_splits(directory, dataset, assignment)
    audit = {**audit_leakage(dataset, assignment), **audit_copies(cfg, dataset, splits)}
    write_json(directory / "audit.json", audit)
    write_json(directory / "balance.json", class_balance(splits, dataset.class_names))
    write_skipped(directory / "skipped.csv", dataset.skipped)
    write_json(directory / "settings.json", settings)
    write_corrections_record(directory, dataset, assignment)
    warn_about(audit)
    warn_about_near_duplicates(audit["near_duplicates"], directory)
    return splits


def audit_copies(cfg: Config, dataset: ImageDataset, splits: Splits) -> dict:
    """The near-duplicate audit (perceptual descriptors, about linear in the images),
    with the cross-split groups' thumbnails beside audit.json for the day checkpoint."""
    block = audit_near_duplicates(
        dataset, split_table(dataset, splits), cfg.health.duplicate_similarity
    )
    if block["cross_split_groups"] or (splits.directory / "near_duplicates.png").is_file():
        # matplotlib is imported only when there is a grid to draw or remove.
        from transferlab.data.health.page import write_cross_split_grid

        write_cross_split_grid(dataset, block["groups"], splits.directory, cfg.health.shown)
    return {"near_duplicates": block}


def correct_saved_splits(
    cfg: Config, directory: Path, dataset: ImageDataset, settings: dict
) -> Splits:
    """The saved splits with data.corrections applied: every other image stays in its split.

    Dropped images leave their split, relabelled ones keep it with their new label, and
    an image no longer dropped goes back to the split it had (train if unknown).
    """
    saved = read_splits(directory)
    was_in = {str(s): n for n in SPLIT_NAMES for s in saved[n]["sample_id"]}
    earlier = previous_record(directory)
    was_in = {**{d["sample_id"]: d["split"] for d in earlier.get("dropped", [])}, **was_in}
    ids = dataset.table["sample_id"].astype(str)
    assignment = np.array([was_in.get(s, "train") for s in ids], dtype=object)
    splits = write_splits(directory, dataset, assignment)
    audit = {**audit_leakage(dataset, assignment), **audit_copies(cfg, dataset, splits)}
    write_json(directory / "audit.json", {**read_json_or_empty(directory / "audit.json"), **audit})
    write_json(directory / "balance.json", class_balance(splits, dataset.class_names))
    write_json(directory / "settings.json", settings)
    warn_about_near_duplicates(audit["near_duplicates"], directory)
    record = write_corrections_record(directory, dataset, assignment, was_in)
    if record["test_changed"]:
        warnings.warn(
            f"data.corrections ({record['file']}) changes the test split: runs evaluated "
            "before and after it are scored on different images or labels, and make compare "
            "refuses to pair them. Re-evaluate every model you want to compare",
            stacklevel=3,
        )
    return splits


def previous_record(directory: Path) -> dict:
    return read_json_or_empty(directory / "corrections.json")


def read_json_or_empty(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def write_corrections_record(
    directory: Path, dataset: ImageDataset, assignment: np.ndarray, was_in: dict | None = None
) -> dict:
    """corrections.json: each dropped and relabelled image with its split, and whether the
    test split changed (the day checkpoint's Data section reads it)."""
    path = directory / "corrections.json"
    if dataset.corrections is None:
        if path.is_file():
            path.unlink()  # corrections were taken out: the splits are as made
        return {"test_changed": False}
    split_of = dict(zip(dataset.table["sample_id"].astype(str), assignment, strict=True))
    was_in = was_in or {}
    dropped = [{"sample_id": s, "split": was_in.get(s, "")} for s in dataset.corrections.drop]
    relabelled = [
        {"sample_id": s, "split": split_of.get(s, ""), "new_label": c}
        for s, c in dataset.corrections.relabel.items()
    ]
    record = {
        "file": dataset.corrections.file,
        "dropped": dropped,
        "relabelled": relabelled,
        "test_changed": any(r["split"] == "test" for r in [*dropped, *relabelled]),
    }
    write_json(path, record)
    return record


def write_skipped(path: Path, skipped: list[dict]) -> Path:
    """The files the dataset scan left out, with why, as a CSV (header only when none)."""
    return write_text(path, pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(index=False))


def assign_splits(dataset: ImageDataset, fractions: list[float], seed: int) -> np.ndarray:
    """Return an array of "train"/"val"/"test", one per table row."""
    table = dataset.table
    assignment = table["fixed_split"].to_numpy().astype(object)
    free = np.flatnonzero(assignment == "")
    if free.size == 0:
        return assignment
    train_frac, val_frac, test_frac = fractions
    if (table["fixed_split"] == "test").any():
        # The dataset brings its own test set: split the rest into train and val only.
        train_frac, val_frac, test_frac = train_frac, val_frac + test_frac, 0.0
    labels = table["label"].to_numpy()[free]
    groups = table["group"].to_numpy()[free]
    if (groups != "").any():
        parts = group_split(
            labels, groups, (train_frac, val_frac, test_frac), seed, dataset.class_names
        )
    else:
        parts = stratified_split(
            labels, (train_frac, val_frac, test_frac), seed, dataset.class_names
        )
    for name, positions in zip(SPLIT_NAMES, parts, strict=True):
        assignment[free[positions]] = name
    return assignment


def stratified_split(labels, fractions, seed, class_names):
    train_frac, val_frac, test_frac = fractions
    counts = np.bincount(labels, minlength=len(class_names))
    needed = sum(f > 0 for f in fractions)
    small = [class_names[i] for i, c in enumerate(counts) if 0 < c < needed]
    if small:
        raise DataError(
            f"class(es) {small} have fewer images than splits ({needed}); add images, "
            "drop those classes, or change data.splits"
        )
    positions = np.arange(len(labels))
    try:
        rest_frac = val_frac + test_frac
        train, rest = train_test_split(
            positions, test_size=rest_frac, stratify=labels, random_state=seed
        )
        if test_frac == 0:
            return train, rest, np.array([], dtype=int)
        val, test = train_test_split(
            rest, test_size=test_frac / rest_frac, stratify=labels[rest], random_state=seed
        )
    except ValueError as err:
        raise DataError(
            f"cannot split {len(labels)} images into fractions {list(fractions)} with every "
            f"class in every split ({err}); use more images or larger val/test fractions"
        ) from None
    return train, val, test


def group_split(labels, groups, fractions, seed, class_names):
    """Group-exclusive split stratified by class, with fractions counted in images.

    Each group (subject) goes whole to one split, and every class reaches every split:
    the classes found in fewest groups are placed first, a random one of their groups
    that fits (else the smallest) to each split that lacks them; then the other groups,
    largest first, each go to the split whose per-class image counts stay nearest their
    targets. Rows without a group are groups of one. Like scikit-learn's
    StratifiedGroupKFold, but for unequal fractions.
    """
    codes, names = group_codes(groups)
    counts = np.zeros((len(names), len(class_names)))
    np.add.at(counts, (codes, labels), 1)
    active = sorted((s for s, f in enumerate(fractions) if f > 0), key=lambda s: fractions[s])
    check_groups_per_class(counts, names, class_names, len(active))
    targets = np.outer(fractions, counts.sum(axis=0))
    weights = 1.0 / np.where(targets > 0, targets, 1.0)
    filled = np.zeros_like(targets)
    split_of = np.full(len(names), -1)

    def added_cost(group, split):
        # Growth of the chi-square distance between the split's class counts and targets.
        before = filled[split] - targets[split]
        after = before + counts[group]
        return float(((after**2 - before**2) * weights[split]).sum())

    def put(group, split):
        split_of[group] = split
        filled[split] += counts[group]

    # The seed decides which of a class's groups go to val and test, and breaks ties.
    order = np.random.default_rng(seed).permutation(len(names))
    groups_per_class = (counts > 0).sum(axis=0)
    for label in sorted(np.flatnonzero(groups_per_class), key=lambda c: groups_per_class[c]):
        for split in active:
            if filled[split, label] > 0:
                continue
            free = [g for g in order if split_of[g] < 0 and counts[g, label] > 0]
            if not free:
                raise DataError(
                    f"could not put class {class_names[label]!r} (in "
                    f"{groups_per_class[label]} groups) in every split with whole groups: "
                    "other classes' rare groups took them. Try another seed, or add images "
                    "of that class from more groups"
                )
            room = targets[split].sum() - filled[split].sum()
            fitting = [g for g in free if counts[g].sum() <= room]
            put(fitting[0] if fitting else min(free, key=lambda g: counts[g].sum()), split)
    for group in sorted(order[split_of[order] < 0], key=lambda g: -counts[g].sum()):
        put(group, min(active, key=lambda s: added_cost(group, s)))
    warn_if_off(counts.sum(axis=1), split_of, fractions, names)
    return tuple(np.flatnonzero(split_of[codes] == s) for s in range(len(SPLIT_NAMES)))


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A code per row and the group names; every row without a group is a group of its own."""
    named = groups != ""
    codes = np.empty(len(groups), dtype=np.int64)
    codes[named], names = pd.factorize(groups[named], sort=True)
    loose = np.flatnonzero(~named)
    codes[loose] = len(names) + np.arange(loose.size)
    return codes, [*names, *["(an image without a group)"] * loose.size]


def check_groups_per_class(counts, group_names, class_names, splits: int) -> None:
    """Every class needs a group for each split; name the classes that have too few."""
    short = []
    for label, name in enumerate(class_names):
        holding = [group_names[g] for g in np.flatnonzero(counts[:, label])]
        if 0 < len(holding) < splits:
            short.append(f"{name!r} is in {len(holding)} group(s) ({', '.join(holding)})")
    if short:
        raise DataError(
            f"class {'; class '.join(short)}: a group-exclusive split puts each group in one "
            f"split, so every class needs images from at least {splits} groups, one per split. "
            "Add images of that class from more groups (subjects), leave the class out"
            + (", or set the test fraction of data.splits to 0" if splits == 3 else "")
        )


def warn_if_off(sizes, split_of, fractions, names) -> None:
    """Warn when whole groups could not come near the asked fractions of the images."""
    shares = [float(sizes[split_of == s].sum() / sizes.sum()) for s in range(len(fractions))]
    if any(abs(share - f) > f / 2 for share, f in zip(shares, fractions, strict=True)):
        largest = int(np.argmax(sizes))
        warnings.warn(
            f"the group-exclusive split holds {[round(s, 2) for s in shares]} of the images "
            f"instead of data.splits={list(fractions)}: the groups are too few or too unequal "
            f"(the largest, {names[largest]!r}, has {int(sizes[largest])} images)",
            stacklevel=5,
        )


def write_splits(directory: Path, dataset: ImageDataset, assignment: np.ndarray) -> Splits:
    tables = {}
    for name in SPLIT_NAMES:
        rows = dataset.table[assignment == name]
        table = pd.DataFrame(
            {
                "sample_id": rows["sample_id"],
                "label": rows["label"],
                "class_name": [dataset.class_names[i] for i in rows["label"]],
                "group": rows["group"],
            }
        ).reset_index(drop=True)
        write_text(directory / f"{name}.csv", table.to_csv(index=False))
        tables[name] = table
    return Splits(**tables, directory=directory)


def read_splits(directory: Path) -> Splits:
    tables = {}
    for name in SPLIT_NAMES:
        path = directory / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"split file {path} is missing; delete {directory} to make new splits")
        tables[name] = pd.read_csv(
            path, dtype={"sample_id": str, "group": str}, keep_default_na=False
        )
    return Splits(**tables, directory=directory)


def audit_leakage(dataset: ImageDataset, assignment: np.ndarray) -> dict:
    """Find byte-identical images and shared groups across splits."""
    table = dataset.table
    hashes = pd.Series([content_hash(dataset, i) for i in range(len(table))])
    frame = pd.DataFrame({"sample_id": table["sample_id"], "split": assignment, "hash": hashes})
    duplicates = []
    for digest, rows in frame.groupby("hash"):
        if rows["split"].nunique() > 1:
            duplicates.append(
                {
                    "hash": digest,
                    "samples": [
                        {"sample_id": s, "split": p}
                        for s, p in zip(rows["sample_id"], rows["split"], strict=True)
                    ],
                }
            )
    shared_groups = []
    grouped = pd.DataFrame({"group": table["group"], "split": assignment})
    for group, rows in grouped[grouped["group"] != ""].groupby("group"):
        if rows["split"].nunique() > 1:
            shared_groups.append({"group": group, "splits": sorted(rows["split"].unique())})
    return {
        "duplicates_across_splits": duplicates,
        "shared_groups": shared_groups,
        "clean": not duplicates and not shared_groups,
    }


def content_hash(dataset: ImageDataset, row: int) -> str:
    if dataset.in_memory:
        return hashlib.sha1(np.ascontiguousarray(dataset.images[row]).tobytes()).hexdigest()
    with open(dataset.table["path"].iloc[row], "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def class_balance(splits: Splits, class_names: list[str]) -> dict:
    """Per-split image counts by class name."""
    balance = {}
    for name in SPLIT_NAMES:
        counts = splits[name]["label"].value_counts()
        balance[name] = {c: int(counts.get(i, 0)) for i, c in enumerate(class_names)}
    return balance


def warn_about(audit: dict) -> None:
    if audit["duplicates_across_splits"]:
        warnings.warn(
            f"leakage: {len(audit['duplicates_across_splits'])} image(s) appear byte-identical in "
            "more than one split (see audit.json); test scores will be optimistic",
            stacklevel=3,
        )
    if audit["shared_groups"]:
        warnings.warn(
            f"leakage: {len(audit['shared_groups'])} group(s) appear in more than one split "
            "(see audit.json)",
            stacklevel=3,
        )
