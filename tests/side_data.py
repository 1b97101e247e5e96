"""Synthetic CSV datasets with metadata and boxes, for the fusion and ROI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import write_image


def metadata_task(root: Path, count: int = 96, size: int = 24, seed: int = 0) -> Path:
    """Noise images whose label is 1 exactly when the "age" column is above 50.

    Only the metadata tells the classes apart; a second column ("noise") carries nothing.
    """
    rng = np.random.default_rng(seed)
    lines = ["path,label,age,noise"]
    for i in range(count):
        age = rng.uniform(20, 80)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        write_image(root / f"img_{i}.png", pixels)
        lines.append(f"img_{i}.png,{'old' if age > 50 else 'young'},{age:.1f},{rng.normal():.3f}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def box_task(root: Path, count: int = 96, size: int = 32, patch: int = 10, seed: int = 0) -> Path:
    """Images with one red and one green patch; the label is the colour of the boxed one.

    Both colours are in every image, so only what lies inside the box tells the classes apart.
    """
    rng = np.random.default_rng(seed)
    lines = ["path,label,boxes"]
    half = size // 2
    for i in range(count):
        pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        # The red patch in one half, the green one in the other, in random order.
        left_red = rng.random() < 0.5
        corners = []
        for channel, left in ((0, left_red), (1, not left_red)):
            col = int(rng.integers(0, half - patch + 1)) + (0 if left else half)
            row = int(rng.integers(0, size - patch + 1))
            pixels[row : row + patch, col : col + patch] = 30
            pixels[row : row + patch, col : col + patch, channel] = 230
            corners.append((col, row))
        label = int(rng.integers(0, 2))
        x, y = corners[label]
        write_image(root / f"img_{i}.png", pixels)
        lines.append(f'img_{i}.png,{"red" if label == 0 else "green"},"{x},{y},{patch},{patch}"')
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"
