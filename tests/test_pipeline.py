import os
from pathlib import Path

import numpy as np
import pytest

from transferlab.config import load_config
from transferlab.data import DataError, decoded, load_dataset
from transferlab.data.images import decode_count
from transferlab.data.pipeline import input_size_for, make_tf_dataset
from transferlab.data.splits import prepare_splits

from .conftest import write_image


def test_in_memory_pipeline_keeps_uint8_and_native_size(cfg):
    ds = load_dataset(cfg)
    splits = prepare_splits(cfg, ds)
    size = input_size_for(cfg, ds)
    assert size == 8  # digits stay 8x8: the model's resize layer takes them to image_size
    batches = list(make_tf_dataset(ds, splits.val, batch_size=64, input_size=size))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.uint8 and images.shape == (270, 8, 8, 3)
    # Evaluation order is the split's order.
    assert labels.tolist() == splits.val["label"].tolist()
    assert np.array_equal(images, ds.load_images(splits.val["sample_id"], size))


def test_training_pipeline_draws_each_epochs_order_from_seed_and_epoch(cfg):
    ds = load_dataset(cfg)
    splits = prepare_splits(cfg, ds)
    steps = -(-len(splits.train) // 32)

    def epoch_labels(seed, first, end):
        pipeline = make_tf_dataset(ds, splits.train, 32, 8, epochs=(first, end), seed=seed)
        batches = [y.numpy() for _, y in pipeline]
        assert len(batches) == steps * (end - first)  # no batch straddles two epochs
        return [np.concatenate(batches[i * steps : (i + 1) * steps]) for i in range(end - first)]

    first, second, third = epoch_labels(0, 0, 3)
    assert sorted(first) == sorted(splits.train["label"].tolist())
    assert not np.array_equal(first, second)
    # A run resumed at epoch 2 sees what an uninterrupted run saw in its epoch 2.
    assert np.array_equal(epoch_labels(0, 2, 3)[0], third)
    assert not np.array_equal(epoch_labels(1, 0, 1)[0], first)


def test_file_pipeline_reads_odd_modes_exactly_as_load_images(cfg, tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "modes"
    for i, mode in enumerate(["RGB", "L", "RGBA", "P"] * 3):
        pixels = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
        write_image(root / f"class{i % 2}" / f"img{i}_{mode}.png", pixels, mode)
    grey16 = (rng.integers(0, 65536, size=(9, 9))).astype(np.uint16)
    from PIL import Image

    Image.fromarray(grey16).save(root / "class0" / "grey16.png")
    folder_cfg = load_config(
        None,
        {
            "output_dir": cfg.output_dir,
            "data.kind": "folder",
            "data.data_dir": str(root),
            "data.splits": [0.5, 0.25, 0.25],
            "data.input_size": 12,
        },
    )
    ds = load_dataset(folder_cfg)
    splits = prepare_splits(folder_cfg, ds)
    assert input_size_for(folder_cfg, ds) == 12
    for name in ("train", "val", "test"):
        images = np.concatenate([x.numpy() for x, _ in make_tf_dataset(ds, splits[name], 4, 12)])
        expected = ds.load_images(splits[name]["sample_id"], size=12)
        # One reader: the pipeline's pixels are load_images' pixels, bit for bit.
        assert images.dtype == np.uint8 and np.array_equal(images, expected)


def test_empty_split_is_a_clear_error(cfg):
    ds = load_dataset(cfg)
    with pytest.raises(ValueError, match="holds no images"):
        make_tf_dataset(ds, prepare_splits(cfg, ds).val.iloc[:0], 8, 8)


def folder_config(cfg, root, size=12):
    overrides = {"data.kind": "folder", "data.data_dir": str(root), "data.input_size": size}
    return load_config(None, {"output_dir": cfg.output_dir, **overrides})


def pixels_of(pipeline) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in pipeline])


def test_folder_epochs_after_the_first_and_evaluation_passes_decode_nothing(cfg, image_folder):
    folder_cfg = folder_config(cfg, image_folder)
    ds = load_dataset(folder_cfg)
    train = prepare_splits(folder_cfg, ds).train
    steps = -(-len(train) // 8)
    counts = [decode_count()]
    for step, _ in enumerate(make_tf_dataset(ds, train, 8, 12, epochs=(0, 3), seed=1)):
        if step % steps == steps - 1:  # an epoch's last batch
            counts.append(decode_count())
    assert np.diff(counts).tolist() == [len(train), 0, 0]  # decodes in epochs 1, 2, 3
    before = decode_count()
    images = pixels_of(make_tf_dataset(ds, train, 8, 12))
    assert decode_count() == before  # an evaluation pass takes the kept pixels
    assert np.array_equal(images, ds.load_images(train["sample_id"], 12))
    # A changed file is a changed dataset: its pixels are decoded afresh.
    changed = ds.table["path"][ds.rows(train["sample_id"][:1])[0]]
    write_image(Path(changed), np.zeros((20, 24, 3), np.uint8))
    os.utime(changed, ns=(0, 0))  # a different modification time, however fast the test
    before = decode_count()
    images = pixels_of(make_tf_dataset(ds, train, 8, 12))
    assert decode_count() == before + len(train)
    assert images[0].max() == 0


def test_a_folder_too_large_for_memory_keeps_its_pixels_on_disk(cfg, image_folder, monkeypatch):
    monkeypatch.setattr(decoded, "memory_budget", lambda: 0)
    monkeypatch.setattr(decoded, "DISK", {})
    folder_cfg = folder_config(cfg, image_folder, size=10)
    ds = load_dataset(folder_cfg)
    first = pixels_of(make_tf_dataset(ds, ds.table, 8, 10))
    files = sorted(p.suffix for p in ds.cache_dir.iterdir())
    assert files == [".done", ".u8"]
    # A new process (no open caches) reads the file the first one wrote: no decode.
    monkeypatch.setattr(decoded, "DISK", {})
    before = decode_count()
    again = pixels_of(make_tf_dataset(ds, ds.table, 8, 10))
    assert decode_count() == before and np.array_equal(first, again)
    assert np.array_equal(first, ds.load_images(ds.table["sample_id"], 10))


def test_a_file_gone_since_loading_is_named(cfg, image_folder):
    ds = load_dataset(folder_config(cfg, image_folder))
    gone = ds.table["path"][0]
    os.remove(gone)
    with pytest.raises(DataError, match=f"image file {gone} was listed .* gone now"):
        make_tf_dataset(ds, ds.table, 8, 12)
