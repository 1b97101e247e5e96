"""Shared fixtures: the real demo config, shrunk (tiny data, 1 epoch, a tmp output dir)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transferlab.config import Config, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


def pytest_collection_modifyitems(config, items):
    """``make test`` runs pytest-xdist workers with ``--dist loadfile``: a file's tests stay
    in one worker, so a module-scoped fixture is built once. Files with such a fixture go
    first: they are the longest, and started last they would leave one worker busy while
    the other idles."""

    def shares_a_module_fixture(item) -> bool:
        return any(
            definitions[-1].scope == "module" and definitions[-1].baseid.startswith("tests")
            for definitions in item._fixtureinfo.name2fixturedefs.values()
        )

    long_files = {item.path for item in items if shares_a_module_fixture(item)}
    items.sort(key=lambda item: item.path not in long_files)  # stable: files stay whole


def demo_config(root: Path, overrides: dict | None = None) -> Config:
    """configs/demo.yaml with its outputs, models and checkpoints under ``root``."""
    return load_config(
        ROOT / "configs" / "demo.yaml",
        {
            "output_dir": str(root / "outputs"),
            "models_dir": str(root / "models"),
            "checkpoints_dir": str(root / "checkpoints"),
            **(overrides or {}),
        },
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """configs/demo.yaml with every output under tmp_path and everything small."""
    return demo_config(
        tmp_path,
        {
            "model.image_size": 32,
            "phase1.epochs": 1,
            "phase2.epochs": 1,
            "train.batch_size": 16,
            "report.output_dir": str(tmp_path / "reports"),
            # The demo picks conv3 for its 32 px heatmaps; tests use the backbone table's.
            "eval.gradcam_layer": None,
        },
    )


def write_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of 12 coloured 20x24 PNG/JPEG images each: red, green, blue."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label, name in enumerate(["red", "green", "blue"]):
        for i in range(12):
            pixels = rng.integers(0, 60, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., label] = 200 + i
            suffix = ".png" if i % 2 else ".jpg"
            write_image(root / name / f"{name}_{i}{suffix}", pixels)
    return root


@contextmanager
def ctrl_c_at_epoch(epoch: int):
    """Press Ctrl-C as training's epoch ``epoch`` (counted from 1) begins."""
    from transferlab.training.checkpoints import EpochCheckpoint

    real_begin = EpochCheckpoint.on_epoch_begin

    def interrupt(self, index, logs=None):
        if index == epoch - 1:
            raise KeyboardInterrupt
        real_begin(self, index, logs)

    EpochCheckpoint.on_epoch_begin = interrupt
    try:
        yield
    finally:
        EpochCheckpoint.on_epoch_begin = real_begin
