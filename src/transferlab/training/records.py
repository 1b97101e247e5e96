"""What a training run leaves in its run directory: metrics.csv, summary.json, curves."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from transferlab.runs import write_text, write_with

METRIC_COLUMNS = [
    "epoch",
    "loss",
    "accuracy",
    "macro_f1",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "learning_rate",
    "epoch_time",
]


def metrics_row(epoch: int, logs: dict, learning_rate: float, epoch_time: float) -> dict:
    """One metrics.csv row; ``epoch`` counts from 1."""
    row = {"epoch": epoch, "learning_rate": learning_rate, "epoch_time": round(epoch_time, 4)}
    for column in METRIC_COLUMNS[1:7]:
        row[column] = float(logs.get(column, math.nan))
    return row


def write_metrics(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def plot_curves(path: Path, rows: list[dict], title: str) -> Path | None:
    """Loss, accuracy, macro-F1 and learning rate per epoch, train and validation."""
    if not rows:
        return None
    # A Figure, not pyplot: saving it leaves the calling notebook's backend alone.
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2, sharex=True)
    for ax, name in zip(axes.flat[:3], ("loss", "accuracy", "macro_f1"), strict=True):
        ax.plot(epochs, [r[name] for r in rows], marker="o", label="train")
        ax.plot(epochs, [r[f"val_{name}"] for r in rows], marker="o", label="validation")
        ax.set_title(name.replace("_", " "))
        ax.legend()
    lr_ax = axes.flat[3]
    lr_ax.plot(epochs, [r["learning_rate"] for r in rows], marker="o", color="tab:green")
    lr_ax.set_title("learning rate")
    if all(r["learning_rate"] > 0 for r in rows) and np.ptp([r["learning_rate"] for r in rows]):
        lr_ax.set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path
