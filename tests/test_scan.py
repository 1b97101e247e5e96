"""The folder scan: done once, kept beside the splits, redone only for new or changed files."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import transferlab.data.scan as scan
from transferlab.config import load_config
from transferlab.data import load_dataset
from transferlab.runs import splits_dir

from .conftest import write_image


@pytest.fixture
def checks(monkeypatch):
    """The files the scan decodes, in the order it decodes them."""
    checked = []
    real = scan.image_problem

    def counting(path):
        checked.append(path.name)
        return real(path)

    monkeypatch.setattr(scan, "image_problem", counting)
    return checked


def folder_config(cfg, root):
    return load_config(
        None, {"output_dir": cfg.output_dir, "data.kind": "folder", "data.data_dir": str(root)}
    )


def test_second_scan_decodes_only_new_or_changed_files(cfg, image_folder, checks):
    (image_folder / "red" / "fake.png").write_bytes(b"this is not a png")
    folder_cfg = folder_config(cfg, image_folder)
    with pytest.warns(UserWarning, match="skipped 1 file"):
        first = load_dataset(folder_cfg)
    assert len(checks) == 37
    cache = splits_dir(folder_cfg) / "scan.csv"
    saved = pd.read_csv(cache, keep_default_na=False)
    assert list(saved.columns) == ["path", "size", "mtime_ns", "problem"] and len(saved) == 37
    assert (
        "not a readable image"
        in saved.set_index("path").loc[str(image_folder / "red" / "fake.png"), "problem"]
    )

    checks.clear()
    with pytest.warns(UserWarning, match="skipped 1 file"):  # remembered, not re-decoded
        second = load_dataset(folder_cfg)
    assert checks == []
    assert second.table.equals(first.table) and second.skipped == first.skipped

    # A changed file (new size and time) and a new file are decoded again; nothing else is.
    changed = image_folder / "green" / "green_3.png"
    write_image(changed, np.full((30, 30, 3), 7, np.uint8))
    os.utime(changed, ns=(1, 1))
    write_image(image_folder / "blue" / "new.png", np.zeros((5, 5, 3), np.uint8))
    checks.clear()
    with pytest.warns(UserWarning):
        third = load_dataset(folder_cfg)
    assert sorted(checks) == ["green_3.png", "new.png"]
    assert len(third.table) == 37


def test_a_damaged_scan_file_costs_only_a_fresh_scan(cfg, image_folder, checks):
    folder_cfg = folder_config(cfg, image_folder)
    load_dataset(folder_cfg)
    cache = splits_dir(folder_cfg) / "scan.csv"
    cache.write_text("garbage,\n\x00\x01")
    checks.clear()
    assert len(load_dataset(folder_cfg).table) == 36
    assert len(checks) == 36
