"""Backbone features cached for sweeps, k-fold, the lr finder and data health: a replaced
image is computed again, everything else is read from the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_image
from tests.tiny_model import build_tiny_model
from transferlab.config import load_config
from transferlab.data import ImageDataset, load_dataset
from transferlab.data.caching import images_digest
from transferlab.data.health.labels import newest_features_file
from transferlab.experiments import features as features_module


@pytest.fixture
def folder_cfg(cfg, image_folder, monkeypatch):
    """The 36-image colour folder at 12 px, with the tiny model for a backbone."""
    monkeypatch.setattr(
        features_module, "build_model", lambda cfg, classes, size: build_tiny_model(classes, size)
    )
    overrides = {"data.kind": "folder", "data.data_dir": str(image_folder), "data.input_size": 12}
    return load_config(None, {"output_dir": cfg.output_dir, **overrides})


def test_a_replaced_image_gets_new_features_and_the_rest_come_from_the_cache(
    folder_cfg, monkeypatch
):
    computed = []  # the number of images each backbone pass computed
    compute = features_module.compute_features

    def counting(cfg, dataset, table, size):
        computed.append(len(table))
        return compute(cfg, dataset, table, size)

    monkeypatch.setattr(features_module, "compute_features", counting)
    first = features_module.backbone_features(folder_cfg)
    again = features_module.backbone_features(folder_cfg)
    assert computed == [36]  # the second call read the cache
    folder = Path(folder_cfg.output_dir, "features")
    (stale,) = folder.glob("*.npz")
    np.testing.assert_array_equal(again.features, first.features)

    # Fixing a bad image: new pixels under the same name (and a new modification time).
    row = 0
    dataset = load_dataset(folder_cfg)
    replaced = dataset.table["path"][dataset.rows(first.sample_ids[row : row + 1])[0]]
    write_image(Path(replaced), np.full((20, 24, 3), 255, np.uint8))
    os.utime(replaced, ns=(0, 0))  # a different modification time, however fast the test

    fixed = features_module.backbone_features(folder_cfg)
    assert computed == [36, 36]
    # What k-fold records of its images changes with them (row 0 is a training image).
    assert first.splits[row] == "train" and again.pool_images == first.pool_images
    assert fixed.pool_images != first.pool_images
    assert not np.allclose(fixed.features[row], first.features[row])
    others = np.arange(len(first.features)) != row
    np.testing.assert_allclose(fixed.features[others], first.features[others], rtol=1e-6)
    (fresh,) = set(folder.glob("*.npz")) - {stale}
    # Data health reads the features of the images as they are now, even when the stale
    # file is the newer one (say, copied back from a backup).
    later = fresh.stat().st_mtime_ns + 10**9
    os.utime(stale, ns=(later, later))
    current = images_digest(dataset, dataset.rows(fixed.sample_ids))
    assert newest_features_file(folder_cfg.output_dir, "demo", 36) == stale
    assert newest_features_file(folder_cfg.output_dir, "demo", 36, current) == fresh


def test_the_images_digest_follows_in_memory_pixels_and_order():
    images = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    table = pd.DataFrame({"sample_id": ["a", "b", "c"], "label": [0, 1, 0]})
    dataset = ImageDataset("tiny", ["x", "y"], table, images)
    digest = images_digest(dataset)
    assert images_digest(dataset, [0, 1, 2]) == digest
    assert images_digest(dataset, [2, 1, 0]) != digest  # the same pixels, another order
    images[1, 0, 0, 0] += 1
    assert images_digest(dataset) != digest
