import json

import numpy as np
import pandas as pd
import pytest

from transferlab.config import load_config
from transferlab.data import DataError, ImageDataset, load_dataset
from transferlab.data.splits import prepare_splits


def synthetic_dataset(labels, groups=None, images=None):
    n = len(labels)
    if images is None:
        # Every image distinct: the sample index is written into the pixels.
        images = np.zeros((n, 4, 4, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n) % 256
        images[:, 0, 0, 1] = np.arange(n) // 256
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "path": "",
            "label": np.asarray(labels, dtype=np.int64),
            "group": groups if groups is not None else "",
            "fixed_split": "",
        }
    )
    names = [f"c{i}" for i in range(max(labels) + 1)]
    return ImageDataset("synthetic", names, table, images)


def test_stratified_split_fractions_and_balance(cfg):
    ds = load_dataset(cfg)
    splits = prepare_splits(cfg, ds)
    sizes = [len(splits[n]) for n in ("train", "val", "test")]
    assert sum(sizes) == 1797
    assert sizes == [1257, 270, 270]
    # Stratified: every class holds close to its overall share in each split.
    for name in ("val", "test"):
        share = splits[name]["label"].value_counts(normalize=True)
        assert (share - 0.1).abs().max() < 0.02
    balance = json.loads((splits.directory / "balance.json").read_text())
    assert sum(balance["train"].values()) == 1257
    assert set(balance["val"]) == set(ds.class_names)


def test_same_seed_same_split_and_reuse(cfg):
    ds = load_dataset(cfg)
    first = prepare_splits(cfg, ds)
    again = prepare_splits(cfg, ds)  # read back from disk
    assert first.val["sample_id"].tolist() == again.val["sample_id"].tolist()
    assert (first.directory / "train.csv").is_file()
    other = load_config(None, {**flat(cfg), "seed": 1, "data.name": "digits_seed1"})
    assert prepare_splits(other, ds).val["sample_id"].tolist() != first.val["sample_id"].tolist()


def test_changed_settings_refuse_stale_splits(cfg):
    ds = load_dataset(cfg)
    prepare_splits(cfg, ds)
    changed = load_config(None, {**flat(cfg), "data.splits": [0.6, 0.2, 0.2]})
    with pytest.raises(DataError, match=r"other settings \(fractions\).*Delete that folder"):
        prepare_splits(changed, ds)


def test_group_exclusive_split(cfg):
    labels = [i % 2 for i in range(200)]
    groups = [f"subject{i // 10}" for i in range(200)]
    splits = prepare_splits(cfg, synthetic_dataset(labels, groups))
    seen = [set(splits[n]["group"]) for n in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(s) for s in seen) == 20
    audit = json.loads((splits.directory / "audit.json").read_text())
    assert audit["clean"] is True


def test_group_bigger_than_a_split(cfg):
    labels = [i % 2 for i in range(100)]
    groups = ["big"] * 40 + [f"g{i}" for i in range(60)]
    with pytest.raises(DataError, match="group 'big' has 40 images"):
        prepare_splits(cfg, synthetic_dataset(labels, groups))


def test_split_too_small_for_fractions(cfg):
    with pytest.raises(DataError, match=r"class\(es\) \['c1'\] have fewer images than splits"):
        prepare_splits(cfg, synthetic_dataset([0] * 10 + [1] * 2))
    with pytest.raises(DataError, match="cannot split 12 images"):
        prepare_splits(cfg, synthetic_dataset([0, 1, 2, 3] * 3))


def test_audit_finds_planted_duplicates(cfg):
    ds = synthetic_dataset([i % 3 for i in range(90)])
    ds.table["fixed_split"] = ["train"] * 60 + ["val"] * 15 + ["test"] * 15
    ds.images[65] = ds.images[7]  # planted: a training image again in val
    ds.images[80] = ds.images[7]  # and in test
    ds.images[8] = ds.images[9]  # a duplicate inside train only: not leakage
    with pytest.warns(UserWarning, match="byte-identical"):
        splits = prepare_splits(cfg, ds)
    audit = json.loads((splits.directory / "audit.json").read_text())
    assert len(audit["duplicates_across_splits"]) == 1
    found = audit["duplicates_across_splits"][0]["samples"]
    assert {(s["sample_id"], s["split"]) for s in found} == {
        ("s7", "train"),
        ("s65", "val"),
        ("s80", "test"),
    }
    assert audit["clean"] is False


def test_audit_finds_planted_shared_subject(cfg, image_folder):
    for split, indices in {
        "train": range(0, 8),
        "val": range(8, 10),
        "test": range(10, 12),
    }.items():
        lines = ["path,label,subject"]
        for c in ("red", "blue"):
            for i in indices:
                suffix = ".png" if i % 2 else ".jpg"
                subject = "alice" if (split, i) in {("train", 0), ("test", 10)} else f"{split}{i}"
                lines.append(f"../images/{c}/{c}_{i}{suffix},{c},{subject}")
        (image_folder.parent / "csvs").mkdir(exist_ok=True)
        (image_folder.parent / "csvs" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    csv_cfg = load_config(
        None,
        {
            **flat(cfg),
            "data.kind": "csv",
            "data.data_dir": str(image_folder.parent / "csvs"),
            "data.group_column": "subject",
        },
    )
    with pytest.warns(UserWarning, match="group"):
        splits = prepare_splits(csv_cfg, load_dataset(csv_cfg))
    audit = json.loads((splits.directory / "audit.json").read_text())
    assert audit["shared_groups"] == [{"group": "alice", "splits": ["test", "train"]}]


def test_skipped_files_are_listed(cfg, image_folder):
    (image_folder / "red" / "junk.txt").write_text("x")
    folder_cfg = load_config(
        None, {**flat(cfg), "data.kind": "folder", "data.data_dir": str(image_folder)}
    )
    with pytest.warns(UserWarning, match="skipped 1"):
        splits = prepare_splits(folder_cfg, load_dataset(folder_cfg))
    skipped = pd.read_csv(splits.directory / "skipped.csv")
    assert skipped["path"].str.endswith("junk.txt").tolist() == [True]


def flat(cfg):
    from transferlab.config import flatten

    return flatten(cfg.to_dict())


def test_training_run_lists_the_skipped_files(cfg, image_folder):
    from transferlab.training import train_phase

    (image_folder / "blue" / "broken.png").write_bytes(b"\x89PNG not really")
    folder_cfg = load_config(
        None,
        {
            **flat(cfg),
            "data.kind": "folder",
            "data.data_dir": str(image_folder),
            "model.backbone": "small_resnet",
            "model.image_size": 16,
            "phase1.epochs": 1,
        },
    )
    with pytest.warns(UserWarning, match="skipped 1"):
        result = train_phase(folder_cfg, "phase1")
    skipped = pd.read_csv(result.run_dir / "skipped.csv")
    assert skipped["path"].str.endswith("broken.png").tolist() == [True]
    assert skipped["reason"].str.contains("not a readable image").all()
