"""``make data-health``: the near-duplicate audit and the likely label errors, on one page.

Writes ``outputs/runs/<ts>_<experiment>_data_health/`` (health.md, figures/,
near_duplicates.csv, label_issues.csv, outliers.csv and decisions.csv, a corrections
file every row of which says keep until the user edits it) and adds the near-duplicate
groups to the splits' audit.json, where the day checkpoint and evaluation read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data import ImageDataset, load_dataset, prepare_splits
from transferlab.data.caching import images_digest
from transferlab.data.health.duplicates import (
    audit_near_duplicates,
    split_table,
    warn_about_near_duplicates,
)
from transferlab.data.health.labels import (
    internal_oof,
    newest_features_file,
    newest_oof_file,
    oof_from_file,
    rank_label_issues,
    rank_outliers,
    recorded_images,
)
from transferlab.data.health.page import (
    duplicate_rows,
    issue_titles,
    outlier_titles,
    plot_grid,
    write_cross_split_grid,
)
from transferlab.runs import new_run_dir, read_json, write_json, write_text

DECISION_COLUMNS = [
    "path",
    "sample_id",
    "finding",
    "label",
    "suggested",
    "score",
    "action",
    "new_label",
]


@dataclass
class HealthResult:
    run_dir: Path
    groups: list[dict]
    label_issues: pd.DataFrame | None
    outliers: pd.DataFrame | None
    source: str  # where the out-of-fold probabilities came from
    figures: dict[str, Path] = field(default_factory=dict)
    # Images the perceptual search left out, by reason (audit.json's "not_searched").
    not_searched: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        crossing = sum(g["cross_split"] for g in self.groups)
        issues = "not ranked" if self.label_issues is None else f"{len(self.label_issues)}"
        left_out = sum(self.not_searched.values())
        skipped = f" ({left_out} image(s) too small or plain to compare)" if left_out else ""
        return (
            f"{len(self.groups)} near-duplicate group(s), {crossing} across splits{skipped}; "
            f"likely label errors: {issues} ({self.source}); {self.run_dir / 'health.md'}"
        )


def data_health(cfg: Config) -> HealthResult:
    """The data-health stage: near-duplicates across splits, likely label errors, outliers."""
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    table = split_table(dataset, splits)
    images = images_digest(dataset, dataset.rows(table["sample_id"]))
    features_path = newest_features_file(cfg.output_dir, cfg.experiment, len(table), images)
    features = np.load(features_path)["features"] if features_path else None
    h = cfg.health
    block = audit_near_duplicates(
        dataset, table, h.duplicate_similarity, features, h.feature_similarity
    )
    record_near_duplicates(splits.directory, block)
    groups = block["groups"]

    pool = table["split"].isin(["train", "val"]).to_numpy()
    pool_images = images_digest(dataset, dataset.rows(table[pool]["sample_id"]))
    probabilities, source = out_of_fold(
        cfg,
        table[pool],
        features[pool] if features is not None else None,
        dataset.class_names,
        pool_images,
    )
    issues = (
        rank_label_issues(table[pool], probabilities, dataset.class_names)
        if probabilities is not None
        else None
    )
    outliers = rank_outliers(table[pool], features[pool], h.shown) if features is not None else None

    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "data_health")
    cfg.save(run_dir / "config.json")
    result = HealthResult(run_dir, groups, issues, outliers, source)
    result.not_searched = block["not_searched"]
    write_tables(result)
    result.figures = write_figures(result, dataset, h.shown, splits.directory)
    write_text(run_dir / "health.md", health_page(cfg, result))
    return result


def record_near_duplicates(directory: Path, block: dict) -> None:
    """Add the groups to audit.json and warn in the terminal about groups across splits."""
    audit = read_json(directory / "audit.json") if (directory / "audit.json").is_file() else {}
    write_json(directory / "audit.json", {**audit, "near_duplicates": block})
    warn_about_near_duplicates(block, directory)


def out_of_fold(
    cfg: Config, pool: pd.DataFrame, features, class_names, images: str = ""
) -> tuple[np.ndarray | None, str]:
    """Out-of-fold probabilities of the train + val images, and where they came from.

    ``images``: the pool's ``images_digest``; a k-fold run that recorded another one was
    of images replaced since (a fixed photo), and its probabilities are passed over.
    """
    oof_path = newest_oof_file(cfg.output_dir, cfg.experiment)
    stale = ""
    if oof_path is not None:
        if images and recorded_images(oof_path) not in ("", images):
            stale = f" (k-fold run {oof_path.parent.name} is of images replaced since)"
        else:
            probabilities = oof_from_file(oof_path, pool, class_names)
            if probabilities is not None:
                return probabilities, f"k-fold run {oof_path.parent.name}"
    if features is not None:
        labels = pool["label"].to_numpy(int)
        return internal_oof(
            features, labels, cfg.seed
        ), "internal cross-validation on cached features" + stale
    return None, "no k-fold run or cached features: run make cv (or make lr-find) first" + stale


def write_tables(result: HealthResult) -> None:
    """The findings as CSVs, and decisions.csv: every finding's image, action keep."""
    run_dir = result.run_dir
    dup_rows = [
        {**s, "group": n, "similarity": g["similarity"], "cross_split": g["cross_split"]}
        for n, g in enumerate(result.groups, start=1)
        for s in g["samples"]
    ]
    duplicates = pd.DataFrame(
        dup_rows,
        columns=["group", "sample_id", "path", "split", "label", "similarity", "cross_split"],
    )
    write_text(run_dir / "near_duplicates.csv", duplicates.to_csv(index=False))
    decisions = [
        duplicates.assign(finding="near_duplicate", suggested="", score=duplicates["similarity"])
    ]
    for name, frame in (("label_issue", result.label_issues), ("outlier", result.outliers)):
        if frame is not None:
            write_text(run_dir / f"{name}s.csv", frame.to_csv(index=False))
            decisions.append(frame.assign(finding=name))
    table = pd.concat(decisions, ignore_index=True).reindex(columns=DECISION_COLUMNS)
    table["action"], table["new_label"] = "keep", ""
    write_text(run_dir / "decisions.csv", table.fillna("").to_csv(index=False))


def write_figures(
    result: HealthResult, dataset: ImageDataset, shown: int, splits_dir: Path
) -> dict[str, Path]:
    figures = {}
    folder = result.run_dir / "figures"
    rows, titles = duplicate_rows(result.groups, shown)
    figures["near_duplicates"] = plot_grid(
        dataset, rows, titles, folder / "near_duplicates.png", "Near-duplicate groups"
    )
    write_cross_split_grid(dataset, result.groups, splits_dir, shown)
    if result.label_issues is not None:
        top = result.label_issues.head(shown)
        figures["label_issues"] = plot_grid(
            dataset, top, issue_titles(top), folder / "label_issues.png", "Likely label errors"
        )
    if result.outliers is not None:
        figures["outliers"] = plot_grid(
            dataset,
            result.outliers,
            outlier_titles(result.outliers),
            folder / "outliers.png",
            "Outliers",
        )
    return figures


def health_page(cfg: Config, result: HealthResult) -> str:
    crossing = sum(g["cross_split"] for g in result.groups)
    lines = [
        f"# Data health: `{cfg.experiment}`",
        "",
        "## Near-duplicates",
        "",
        f"{len(result.groups)} group(s) of near-duplicate images (similarity >= "
        f"{cfg.health.duplicate_similarity}), {crossing} spanning splits. Listed in "
        "`near_duplicates.csv` and the splits' `audit.json`.",
        "",
    ]
    left_out = {k: v for k, v in result.not_searched.items() if v}
    if left_out:
        lines += [
            "Left out of the perceptual search, because there a copy is no closer to its "
            "original than unrelated pictures are: "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left_out.items())
            + ". Byte-identical copies are still found (the split audit's hash), and "
            "similar backbone features where they are cached.",
            "",
        ]
    if "near_duplicates" in result.figures:
        lines += ["![near-duplicates](figures/near_duplicates.png)", ""]
    lines += ["## Likely label errors", ""]
    if result.label_issues is None:
        lines += [f"_not ranked: {result.source}_", ""]
    else:
        lines += [
            f"{len(result.label_issues)} train/val image(s) whose given label the "
            f"out-of-fold model doubts (from {result.source}), in `label_issues.csv`.",
            "",
            "![label issues](figures/label_issues.png)",
            "",
        ]
    lines += ["## Outliers", ""]
    if result.outliers is None:
        lines += ["_not scored: no cached backbone features (make cv, lr-find or sweep)_", ""]
    else:
        lines += [
            "Farthest from their nearest neighbours in feature space, in `outliers.csv`.",
            "",
            "![outliers](figures/outliers.png)",
            "",
        ]
    lines += [
        "## Decisions",
        "",
        "Edit `decisions.csv` (action `drop`, `relabel` with `new_label`, or `keep`), then "
        "set `data.corrections` to it. Nothing on disk is deleted or moved.",
    ]
    return "\n".join(lines) + "\n"


def start_decisions(result: HealthResult, path: str | Path | None = None) -> Path:
    """The corrections file the user edits: ``path`` (default corrections.csv beside the
    outputs), started from this run's decisions.csv when it does not exist yet.

    An existing file is never overwritten: it holds the user's edits.
    """
    target = Path(path) if path else result.run_dir.parents[1] / "corrections.csv"
    if not target.is_file():
        write_text(target, (result.run_dir / "decisions.csv").read_text())
    return target
