"""Training curves per epoch, for one phase or for phase 1 and 2 on one epoch axis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.runs import write_with

METRICS = ("loss", "accuracy", "macro_f1")


def plot_curves(path: Path, rows: list[dict], title: str) -> Path | None:
    """Loss, accuracy, macro-F1 and learning rate per epoch, train and validation."""
    return plot_phases(path, {"": rows}, title)


def plot_phases(path: Path, phases: dict[str, list[dict]], title: str) -> Path | None:
    """Phases one after another on one epoch axis, a dashed line where each new one starts.

    ``phases``: each phase's metrics.csv rows (dicts with ``epoch``), in training order.
    Epochs count on across phases: phase 2's first epoch follows phase 1's last.
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
    for ax, name in zip(axes.flat[:3], METRICS, strict=True):
        for i, (_, epochs, rows) in enumerate(segments):
            # One line per phase: phase 2 starts from phase 1's best epoch, not its last.
            for key, color, label in (
                (name, "tab:blue", "train"),
                (f"val_{name}", "tab:orange", "validation"),
            ):
                ax.plot(
                    epochs,
                    column(rows, key),
                    marker="o",
                    color=color,
                    label=label if i == 0 else None,
                )
        ax.set_title(name.replace("_", " "))
        ax.legend()
    lr_ax = axes.flat[3]
    rates = []
    for _, epochs, rows in segments:
        lr_ax.plot(epochs, column(rows, "learning_rate"), marker="o", color="tab:green")
        rates += column(rows, "learning_rate")
    lr_ax.set_title("learning rate")
    finite = [r for r in rates if math.isfinite(r)]
    if finite and min(finite) > 0 and np.ptp(finite):
        lr_ax.set_yscale("log")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        for i, (name, epochs, _) in enumerate(segments):
            if i > 0:
                ax.axvline(epochs[0] - 0.5, color="0.4", linestyle="--", linewidth=1)
            if name:
                ax.text(
                    epochs[0] - 0.4,
                    0.98,
                    name,
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=8,
                    color="0.3",
                )
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path


def column(rows: list[dict], key: str) -> list[float]:
    """One metric per epoch; NaN where a row lacks it, so the line leaves a gap."""
    return [float(r.get(key, math.nan)) for r in rows]
