"""metrics.csv: one row per epoch, written by training and read by reports and benchmarks."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from transferlab.runs.files import write_text

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
