"""Training curves: loss, accuracy, macro-F1 and learning rate per epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.runs import write_with


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
