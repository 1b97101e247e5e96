"""The training report of one run: per-epoch table, train-vs-val gap, trends, diagnosis."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.reports.changes import phase_change
from transferlab.reports.markdown import bullets, copy_figure, link, num, seconds, table
from transferlab.reports.rules import Diagnosis, RunInfo, diagnose
from transferlab.reports.runfiles import RunFiles, read_run
from transferlab.runs import write_text

EPOCH_COLUMNS = [
    ("loss", "Train loss"),
    ("accuracy", "Train acc"),
    ("macro_f1", "Train macro-F1"),
    ("val_loss", "Val loss"),
    ("val_accuracy", "Val acc"),
    ("val_macro_f1", "Val macro-F1"),
    ("learning_rate", "LR"),
    ("epoch_time", "Time (s)"),
]
SEVERITY_MARK = {"critical": "**critical**", "warning": "warning", "info": "info"}


def write_training_report(run_dir: str | Path, output_dir: str | Path) -> Path:
    """Write ``<output_dir>/training_<run id>.md`` (figures in a folder beside it)."""
    run = read_run(run_dir)
    if run.history is None:
        raise FileNotFoundError(f"{run.path} has no metrics.csv; is it a training run directory?")
    output_dir = Path(output_dir)
    path = output_dir / f"training_{run.name}.md"
    return write_text(
        path, training_markdown(run, output_dir, output_dir / f"training_{run.name}_files")
    )


def run_diagnosis(run: RunFiles, phase1_best: float | None = None) -> Diagnosis:
    """The run's verdict and findings, from its metrics.csv, summary.json and config.json.

    ``phase1_best``: phase 1's best monitored value, for a phase 2 run whose summary does
    not carry it.
    """
    info = RunInfo.of(run.summary, run.config)
    if phase1_best is not None:
        info.phase1_best = phase1_best
    if info.phase == "phase2":
        # Whether phase 2 is really worse (or better) is tested image by image.
        info.phase1_test = phase_change(run)
    return diagnose(run.history, info)


def training_markdown(run: RunFiles, report_dir: Path, files_dir: Path) -> str:
    s, history = run.summary, run.history
    diagnosis = run_diagnosis(run)
    lines = [
        f"# Training report: `{run.name}`",
        "",
        f"Experiment `{s.get('experiment', '?')}`, phase `{s.get('phase', '?')}`, "
        f"backbone `{s.get('backbone', '?')}`; from `{run.path.name}/`.",
        "",
        verdict_line(diagnosis),
        "",
        "## Summary",
        "",
        table(
            ["", ""],
            [
                ["Epochs run", s.get("epochs_run", len(history))],
                ["Best epoch", s.get("best_epoch")],
                ["Monitor", f"`{s['monitor']}`" if s.get("monitor") else "—"],
                *[
                    [f"Best {k}", v]
                    for k, v in sorted(s.get("best_metrics", {}).items())
                    if k.startswith("val_")
                ],
                ["Stop reason", str(s.get("stop_reason", "—"))],
                ["Wall time", seconds(s.get("wall_time_s"))],
            ],
        ),
        "",
    ]
    curves = run.path / "figures" / "training_curves.png"
    if curves.is_file():
        copied = copy_figure(curves, files_dir, "training_curves.png")
        lines += [f"![Training curves]({link(copied, report_dir)})", ""]
    lines += ["## Per-epoch metrics", "", epoch_table(history), ""]
    lines += ["## Train vs validation gap", "", gap_table(history), ""]
    lines += ["## Trend analysis", "", bullets(trends(history)), ""]
    lines += ["## Diagnosis", "", diagnosis_markdown(diagnosis), ""]
    return "\n".join(lines)


def epoch_table(history: pd.DataFrame) -> str:
    present = [(c, title) for c, title in EPOCH_COLUMNS if c in history]
    rows = [[int(r["epoch"]), *(r[c] for c, _ in present)] for _, r in history.iterrows()]
    return table(["Epoch", *(title for _, title in present)], rows)


def gap_table(history: pd.DataFrame) -> str:
    """Train minus validation accuracy, validation minus train loss, per epoch."""
    if not {"accuracy", "val_accuracy"} <= set(history):
        return "_no accuracy columns in metrics.csv_"
    rows = []
    for _, r in history.iterrows():
        row = [int(r["epoch"]), r["accuracy"], r["val_accuracy"], r["accuracy"] - r["val_accuracy"]]
        if {"loss", "val_loss"} <= set(history):
            row += [r["loss"], r["val_loss"], r["val_loss"] - r["loss"]]
        rows.append(row)
    header = ["Epoch", "Train acc", "Val acc", "Acc gap (train − val)"]
    if {"loss", "val_loss"} <= set(history):
        header += ["Train loss", "Val loss", "Loss gap (val − train)"]
    return table(header, rows)


def trends(history: pd.DataFrame) -> list[str]:
    """First, best and last values of each validation metric, and the training loss."""
    out = []
    epoch = history["epoch"].astype(int)
    for column, better in (("val_accuracy", "max"), ("val_macro_f1", "max"), ("val_loss", "min")):
        if column not in history:
            continue
        values = history[column]
        best = int(values.idxmax() if better == "max" else values.idxmin())
        out.append(
            f"`{column}`: {num(values.iloc[0])} at epoch {epoch.iloc[0]}, "
            f"{'best' if better == 'max' else 'lowest'} {num(values.iloc[best])} at epoch "
            f"{epoch.iloc[best]}, last {num(values.iloc[-1])} at epoch {epoch.iloc[-1]}"
        )
    if "loss" in history:
        out.append(
            f"`loss` (train): {num(history['loss'].iloc[0])} → {num(history['loss'].iloc[-1])}"
        )
    if "learning_rate" in history and history["learning_rate"].nunique() > 1:
        lr = history["learning_rate"]
        out.append(f"`learning_rate`: {num(lr.iloc[0])} → {num(lr.iloc[-1])}")
    return out


def verdict_line(diagnosis: Diagnosis) -> str:
    """The verdict and, when it has one, its finding's next step, in one line."""
    top = diagnosis.headline
    if top is None:
        return f"**Verdict: {diagnosis.verdict}.**"
    action = f" *Next:* {top.action}." if top.action else ""
    return f"**Verdict: {diagnosis.verdict}.** {top.message[0].upper()}{top.message[1:]}.{action}"


def diagnosis_markdown(diagnosis: Diagnosis) -> str:
    lines = [f"**Verdict: {diagnosis.verdict}.**", ""]
    for f in diagnosis.findings:
        action = f" *Next:* {f.action}." if f.action else ""
        lines.append(f"- {SEVERITY_MARK[f.severity]}: {f.message}.{action}")
    return "\n".join(lines)
