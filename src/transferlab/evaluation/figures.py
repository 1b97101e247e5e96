"""Evaluation and Grad-CAM figures, readable from 2 to 100 classes.

Figures are built on ``matplotlib.figure.Figure`` directly, not pyplot, so saving
one never changes the backend of the notebook that called it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, auc, roc_curve

from transferlab.experiments.stats import expected_calibration_error, reliability_bins
from transferlab.runs import write_with

# Above this many classes, per-cell values and per-class legends stop being readable.
MANY_CLASSES = 15


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and return the path."""
    return write_with(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    )


def plot_confusion_matrix(
    y_true, y_pred, class_names: list[str], path: str | Path, normalize: str | None = None
) -> Path:
    """Confusion matrix in counts (``normalize=None``) or normalized by true class ("true")."""
    n = len(class_names)
    side = float(np.clip(0.35 * n + 3, 5, 30))
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(n)),
        display_labels=class_names,
        normalize=normalize,
        include_values=n <= MANY_CLASSES,
        values_format=".2f" if normalize else "d",
        xticks_rotation="vertical",
        colorbar=n <= MANY_CLASSES,
        ax=ax,
    )
    if n > MANY_CLASSES:
        ax.tick_params(labelsize=max(4, 10 - n // 15))
    ax.set_title("Confusion matrix" + (" (normalized by true class)" if normalize else " (counts)"))
    return save_figure(fig, path)


def plot_roc_curves(
    y_true, probabilities: np.ndarray, class_names: list[str], path: str | Path
) -> Path:
    """One-vs-rest ROC per class, the macro average, and the chance line."""
    n = len(class_names)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, 201)
    mean_tpr = np.zeros_like(grid)
    present = 0
    # Binary: one curve (class 1 against class 0) says it all.
    classes = [1] if n == 2 else range(n)
    for c in classes:
        positives = np.asarray(y_true) == c
        if positives.all() or not positives.any():
            continue  # ROC is undefined for a class absent from (or alone in) the split
        fpr, tpr, _ = roc_curve(positives, probabilities[:, c])
        mean_tpr += np.interp(grid, fpr, tpr)
        present += 1
        if n <= MANY_CLASSES:
            ax.plot(fpr, tpr, lw=1.2, label=f"{class_names[c]} (AUC {auc(fpr, tpr):.3f})")
        else:
            ax.plot(fpr, tpr, lw=0.5, color="0.7")
    if present and n > 2:
        mean_tpr /= present
        ax.plot(
            grid,
            mean_tpr,
            lw=2.5,
            color="navy",
            label=f"macro average (AUC {auc(grid, mean_tpr):.3f})",
        )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("ROC curves (one vs rest)" if n > 2 else "ROC curve")
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_reliability(
    y_true,
    probabilities: np.ndarray,
    path: str | Path,
    bins: int = 15,
    calibrated: np.ndarray | None = None,
    temperature: float | None = None,
) -> Path:
    """Reliability diagram: accuracy against confidence per bin, and how many images each holds.

    A calibrated model's bars sit on the diagonal; bars below it are over-confidence.
    ``calibrated``: the same images' probabilities after temperature scaling, drawn beside.
    """
    fig = Figure(figsize=(6.5, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    fig.subplots_adjust(hspace=0.08)
    width = 1.0 / bins
    curves = [("model", probabilities, "tab:blue")]
    if calibrated is not None:
        curves.append((f"temperature {temperature:.2f}", calibrated, "tab:orange"))
    for offset, (name, probs, color) in enumerate(curves):
        table = reliability_bins(y_true, probs, bins)
        ece = expected_calibration_error(y_true, probs, bins)
        # Side by side when there are two, so neither hides the other.
        shift = (offset - (len(curves) - 1) / 2) * width / len(curves)
        left = table["lower"] + width / 2 + shift
        bar = width / len(curves)
        used = table["count"] > 0
        top.bar(
            left[used],
            table["accuracy"][used],
            width=bar,
            color=color,
            alpha=0.8,
            edgecolor="white",
            label=f"{name} (ECE {ece:.3f})",
        )
        bottom.bar(left, table["count"], width=bar, color=color, alpha=0.8)
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylabel="Accuracy", xlim=(0, 1), ylim=(0, 1))
    top.set_title("Reliability diagram (top-label confidence)")
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="Confidence", ylabel="Images")
    return save_figure(fig, path)


def plot_image_grid(
    images: list[np.ndarray],
    titles: list[str],
    path: str | Path,
    correct: list[bool | None] | None = None,
    suptitle: str = "",
    columns: int = 4,
    colorbar: tuple | None = None,
    cell: float = 2.6,
) -> Path:
    """Images in a grid with a title each; green titles when right, red when wrong.

    ``cell``: each image's height in inches; its width follows the first image's shape
    (wide for image | overlay pairs). ``colorbar``: (colormap, label) of a 0 to 1 colour
    scale drawn beside the grid.
    """
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = -(-count // columns)
    aspect = images[0].shape[1] / images[0].shape[0] if images else 1.0
    width = columns * cell * aspect + (1.2 if colorbar else 0.0)
    height = rows * (cell + 0.3) + (0.4 if suptitle else 0.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = []
    if not images:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center")
        ax.axis("off")
    for i, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, interpolation="nearest" if max(image.shape[:2]) < 64 else "antialiased")
        ok = None if correct is None else correct[i]
        color = "black" if ok is None else ("green" if ok else "red")
        ax.set_title(title, fontsize=8, color=color)
        ax.axis("off")
        axes.append(ax)
    if colorbar and axes:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        colormap, label = colorbar
        scale = ScalarMappable(Normalize(0, 1), colormap)
        fig.colorbar(scale, ax=axes, shrink=min(0.9, 2.5 / height), label=label)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def short(name: str, width: int = 14) -> str:
    """Shorten a class name for a figure title (digits' class names may be read back as ints)."""
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"
