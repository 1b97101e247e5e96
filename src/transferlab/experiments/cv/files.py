"""A cross-validation's result and the files it writes: fold assignment, out-of-fold
probabilities, ``cv.json``, the ``cv.md`` page and its figures.

``folds.csv`` has one row per (image, fold): the image's role in that fold, "train" or
"held_out"; each image is held out in exactly one fold. ``oof_probabilities.csv`` has
one row per train + val image with the probabilities of the head that never saw it,
which is what label-error finding (cleanlab's ``find_label_issues``) takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlab.config import Config
from transferlab.evaluation.figures import save_figure
from transferlab.experiments.cv.scores import group_spread
from transferlab.runs import write_json, write_text

IMAGE_COLUMNS = ["sample_id", "path", "split", "group", "label", "class_name"]
LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced acc."}


@dataclass
class CVResult:
    """What ``cross_validate`` returns; the same numbers are in ``cv.json``."""

    run_dir: Path
    folds: int
    grouped: bool
    per_fold: pd.DataFrame  # fold, n, accuracy, macro_f1, balanced_accuracy
    summary: dict  # per metric: mean, sd, low, high (a t-interval over folds)
    pooled: dict  # the metrics of all out-of-fold predictions together
    oof: pd.DataFrame  # one row per train + val image, its fold and class probabilities
    groups: pd.DataFrame | None = None  # per-group out-of-fold accuracy (grouped only)
    phase2: dict | None = None  # per-fold fine-tuning results (cv.phase2=true)
    phase2_oof: pd.DataFrame | None = None  # the fine-tuned models' out-of-fold table
    # images_digest of the images cross-validated: data health passes over a run whose
    # images were replaced since.
    images_digest: str = ""
    figures: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        acc, f1 = self.summary["accuracy"], self.summary["macro_f1"]
        level = f"{acc['confidence']:.0%}"
        kind = "group-exclusive " if self.grouped else ""
        return (
            f"{self.folds}-fold {kind}cross-validation on {len(self.oof)} images: "
            f"accuracy {acc['mean']:.4f} [{acc['low']:.4f}, {acc['high']:.4f}], "
            f"macro-F1 {f1['mean']:.4f} [{f1['low']:.4f}, {f1['high']:.4f}] "
            f"(mean of the folds, {level} t-interval over folds); "
            f"out-of-fold accuracy {self.pooled['accuracy']:.4f}; {self.run_dir}"
        )


def write_cv_files(cfg: Config, result: CVResult, seconds: float) -> list[Path]:
    """Write every file of the run folder; return the figures."""
    run_dir = result.run_dir
    cfg.save(run_dir / "config.json")
    write_text(run_dir / "folds.csv", folds_table(result.oof, result.folds).to_csv(index=False))
    write_text(run_dir / "oof_probabilities.csv", result.oof.to_csv(index=False))
    if result.phase2_oof is not None:
        write_text(run_dir / "oof_probabilities_phase2.csv", result.phase2_oof.to_csv(index=False))
    spread = None
    if result.groups is not None:
        write_text(run_dir / "groups.csv", result.groups.to_csv(index=False))
        spread = group_spread(result.groups)
    figures = [plot_folds(result.per_fold, result.summary, run_dir / "figures" / "folds.png")]
    if result.groups is not None and len(result.groups):
        figures.append(plot_groups(result.groups, run_dir / "figures" / "group_accuracy.png"))
    write_json(run_dir / "cv.json", cv_record(cfg, result, spread, seconds))
    write_text(run_dir / "cv.md", cv_page(cfg, result, spread, figures))
    return figures


def level(result: CVResult) -> str:
    """The intervals' confidence level as a percentage ("95%")."""
    return f"{result.summary['accuracy']['confidence']:.0%}"


def folds_table(oof: pd.DataFrame, folds: int) -> pd.DataFrame:
    """One row per (image, fold) with the image's role in that fold."""
    parts = []
    for fold in range(folds):
        role = np.where(oof["fold"] == fold, "held_out", "train")
        parts.append(oof[IMAGE_COLUMNS].assign(fold=fold, role=role))
    return pd.concat(parts, ignore_index=True)


def cv_record(cfg: Config, result: CVResult, spread: dict | None, seconds: float) -> dict:
    """``cv.json``: settings, per-fold metrics, their means with intervals, pooled metrics."""
    return {
        "folds": result.folds,
        "grouped": result.grouped,
        "group_column": cfg.data.group_column,
        "seed": cfg.seed,
        "images": len(result.oof),
        "images_digest": result.images_digest,
        "test_split": "not used: cross-validation runs over train + val only",
        "training": {
            "phase1": "head on cached backbone features, phase1.epochs with no early stopping",
            "epochs": cfg.phase1.epochs,
            "learning_rate": cfg.phase1.learning_rate,
            "optimizer": cfg.phase1.optimizer,
            "phase2": cfg.cv.phase2,
        },
        "interval": f"{level(result)} t-interval of the mean over folds (scipy.stats.t, K - 1 "
        "degrees of freedom); groups: Wilson interval of each group's accuracy",
        "per_fold": result.per_fold.to_dict("records"),
        "mean": result.summary,
        "out_of_fold": result.pooled,
        "groups": spread,
        "phase2": result.phase2,
        "seconds": round(seconds, 2),
        "files": ["folds.csv", "oof_probabilities.csv", "cv.md", "figures/folds.png"]
        + (["groups.csv", "figures/group_accuracy.png"] if result.groups is not None else [])
        + (["oof_probabilities_phase2.csv"] if result.phase2_oof is not None else []),
    }


def cv_page(cfg: Config, result: CVResult, spread: dict | None, figures: list[Path]) -> str:
    """``cv.md``: the per-fold table with the mean and its interval, then the groups."""
    grouped = f", group-exclusive by `{cfg.data.group_column}`" if result.grouped else ""
    lines = [
        f"# {result.folds}-fold cross-validation: {cfg.experiment}",
        "",
        f"{len(result.oof)} train + val images in {result.folds} stratified folds{grouped} "
        f"(seed {cfg.seed}); the test split is not used. Each fold's phase-1 head trained "
        f"{cfg.phase1.epochs} epoch(s) on the other folds' cached features and was scored on "
        "the held-out fold.",
        "",
        *metric_table(result.per_fold, result.summary, result.pooled),
        "",
        f"Mean: the average of the folds; [low, high]: its {level(result)} t-interval over the "
        f"{result.folds} folds. Out-of-fold: every image scored once, by the head that "
        "never saw it, pooled.",
    ]
    if spread:
        lines += ["", *group_section(spread)]
    if result.phase2:
        lines += ["", "## Phase 2 per fold", "", *phase2_section(result.phase2)]
    lines += ["", *[f"![{p.stem}](figures/{p.name})" for p in figures]]
    lines += [
        "",
        "Files: `folds.csv` (each image's role, train or held_out, in every fold), "
        "`oof_probabilities.csv` (each image's out-of-fold class probabilities), `cv.json`"
        + (", `groups.csv` (each group's accuracy)" if result.groups is not None else "")
        + (", `oof_probabilities_phase2.csv`" if result.phase2_oof is not None else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def metric_table(per_fold: pd.DataFrame, summary: dict, pooled: dict) -> list[str]:
    header = "| fold | images | " + " | ".join(LABELS.values()) + " |"
    lines = [header, "|" + "---|" * (2 + len(LABELS))]
    for row in per_fold.itertuples():
        values = " | ".join(f"{getattr(row, m):.4f}" for m in LABELS)
        lines.append(f"| {row.fold + 1} | {row.n} | {values} |")
    means = " | ".join(
        f"**{summary[m]['mean']:.4f}** [{summary[m]['low']:.4f}, {summary[m]['high']:.4f}]"
        for m in LABELS
    )
    lines.append(f"| mean | {int(per_fold['n'].sum())} | {means} |")
    lines.append(
        f"| out-of-fold | {pooled['n']} | " + " | ".join(f"{pooled[m]:.4f}" for m in LABELS) + " |"
    )
    return lines


def group_section(spread: dict) -> list[str]:
    weakest = ", ".join(
        f"`{g['group']}` {g['accuracy']:.2f} [{g['low']:.2f}, {g['high']:.2f}] ({g['n']})"
        for g in spread["weakest"]
    )
    return [
        "## Per-group performance",
        "",
        f"Out-of-fold accuracy of each of the {spread['groups']} groups (`groups.csv`): "
        f"mean {spread['mean']:.3f}, sd {spread['sd']:.3f}, min {spread['min']:.3f}, "
        f"quartiles {spread['q25']:.3f} / {spread['median']:.3f} / {spread['q75']:.3f}, "
        f"max {spread['max']:.3f}.",
        "",
        f"Weakest groups (accuracy [Wilson interval], images): {weakest}.",
    ]


def phase2_section(phase2: dict) -> list[str]:
    per_fold = pd.DataFrame(phase2["per_fold"])
    lines = metric_table(per_fold, phase2["mean"], phase2["out_of_fold"])
    return [
        *lines,
        "",
        phase2["note"],
    ]


def plot_folds(per_fold: pd.DataFrame, summary: dict, path: Path) -> Path:
    """One panel per metric: a bar per fold, the mean as a line, its interval as a band."""
    fig = Figure(figsize=(4 * len(LABELS), 3.6), layout="constrained")
    folds = per_fold["fold"].to_numpy() + 1
    for i, (metric, label) in enumerate(LABELS.items()):
        ax = fig.add_subplot(1, len(LABELS), i + 1)
        bars = ax.bar(folds, per_fold[metric], color="#8fb3d9", label="fold")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        s = summary[metric]
        ax.axhline(s["mean"], color="#1f4e79", label=f"mean {s['mean']:.3f}")
        ax.axhspan(
            s["low"],
            s["high"],
            color="#1f4e79",
            alpha=0.15,
            label=f"{s['confidence']:.0%} interval",
        )
        ax.set_xticks(folds)
        ax.set_xlabel("fold")
        ax.set_title(label)
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower right", fontsize=8)
    level = f"{summary['accuracy']['confidence']:.0%}"
    fig.suptitle(f"Held-out score per fold, the mean and its {level} t-interval over folds")
    return save_figure(fig, path)


def plot_groups(groups: pd.DataFrame, path: Path) -> Path:
    """Out-of-fold accuracy per group, sorted: the per-subject distribution."""
    fig = Figure(figsize=(max(5, 0.25 * len(groups) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(groups)), groups["accuracy"], color="#8fb3d9")
    ax.axhline(groups["accuracy"].mean(), color="#1f4e79", label="mean over groups")
    if len(groups) <= 40:
        ax.set_xticks(range(len(groups)), groups["group"], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("out-of-fold accuracy")
    ax.set_title(f"Per-group accuracy ({len(groups)} groups)")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
