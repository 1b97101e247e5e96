"""Training curves per epoch, for one phase or for phase 1 and 2 on one epoch axis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.runs import write_with

METRICS = ("loss", "accuracy", "macro_f1")
LINES = (("", "tab:blue", "train"), ("val_", "tab:orange", "validation"))


def plot_curves(path: Path, rows: list[dict], title: str) -> Path | None:
    """Loss, accuracy, macro-F1 and learning rate per epoch, train and validation."""
    return plot_phases(path, {"": rows}, title)


def plot_phases(path: Path, phases: dict[str, list[dict]], title: str) -> Path | None:
    """``curves_figure`` saved as PNG; None when no phase has a row."""
    fig = curves_figure(phases, title)
    if fig is None:
        return None
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path


def curves_figure(phases: dict[str, list[dict]], title: str):
    """Phases one after another on one epoch axis, a dashed line where each new one starts.

    ``phases``: each phase's metrics.csv rows (dicts with ``epoch``) by name, in training
    order. Epochs count on across phases: phase 2's first epoch follows phase 1's last.
    """
    segments, offset = [], 0
    for name, rows in phases.items():
        if rows:
            segments.append((name, [r["epoch"] + offset for r in rows], rows))
            offset += max(r["epoch"] for r in rows)
    if not segments:
        return None
    # A Figure, not pyplot: saving it leaves the calling notebook's backend alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2, sharex=True)
    for ax, metric in zip(axes.flat[:3], METRICS, strict=True):
        for i, (_, epochs, rows) in enumerate(segments):
            # A line per phase: phase 2 starts from phase 1's best epoch, not from its last.
            for prefix, color, label in LINES:
                values = column(rows, prefix + metric)
                ax.plot(epochs, values, marker="o", color=color, label=None if i else label)
        ax.set_title(metric.replace("_", " "))
        ax.legend()
    lr_ax = axes.flat[3]
    for _, epochs, rows in segments:
        lr_ax.plot(epochs, column(rows, "learning_rate"), marker="o", color="tab:green")
    lr_ax.set_title("learning rate")
    rates = [r for _, _, rows in segments for r in column(rows, "learning_rate")]
    rates = [r for r in rates if math.isfinite(r)]
    if rates and min(rates) > 0 and np.ptp(rates):
        lr_ax.set_yscale("log")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlim(0.5, offset + 0.5)
        for i, (name, epochs, _) in enumerate(segments):
            if i:
                ax.axvline(epochs[0] - 0.5, color="0.4", linestyle="--", linewidth=1)
            if name:
                ax.annotate(
                    name,
                    (epochs[0] - 0.5, 1),
                    xycoords=ax.get_xaxis_transform(),
                    xytext=(3, -3),
                    textcoords="offset points",
                    va="top",
                    fontsize=8,
                    color="0.3",
                )
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def column(rows: list[dict], key: str) -> list[float]:
    """One metric per epoch; NaN where a row lacks it, so the line leaves a gap."""
    return [float(r.get(key, math.nan)) for r in rows]
