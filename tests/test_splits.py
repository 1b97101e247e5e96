import json

import numpy as np
import pandas as pd
import pytest

from transferlab.config import load_config
from transferlab.data import DataError, ImageDataset, load_dataset
from transferlab.data.splits import assign_splits, prepare_splits


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


def test_a_big_group_goes_whole_to_train(cfg):
    labels = [i % 2 for i in range(100)]
    groups = ["big"] * 40 + [f"g{i}" for i in range(60)]
    splits = prepare_splits(cfg, synthetic_dataset(labels, groups))
    assert "big" in set(splits.train["group"])
    # Fractions count images, not groups (within one image per class of 7.5 and 7.5).
    sizes = [len(splits[n]) for n in ("train", "val", "test")]
    assert sizes[0] == 70 and abs(sizes[1] - 15) <= 1 and abs(sizes[2] - 15) <= 1


def drowsiness_table(seed=7):
    """12 subjects with several images each: "alert" from all, "drowsy" from 8, "yawning" from 3."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for subject in range(12):
        counts = {
            0: int(rng.integers(8, 20)),
            1: int(rng.integers(3, 10)) if subject % 3 else 0,
            2: int(rng.integers(3, 7)) if subject in (2, 6, 9) else 0,
        }
        for label, count in counts.items():
            labels += [label] * count
            groups += [f"subject{subject}"] * count
    return synthetic_dataset(labels, groups)


@pytest.mark.parametrize("seed", range(10))
def test_group_split_puts_every_class_in_every_split(seed):
    ds = drowsiness_table()
    assignment = assign_splits(ds, [0.7, 0.15, 0.15], seed)
    table = ds.table.assign(split=assignment)
    for name in ("train", "val", "test"):
        rows = table[table["split"] == name]
        assert sorted(rows["label"].unique()) == [0, 1, 2], f"seed {seed}: {name}"
        # Within half its fraction of the images.
        share = len(rows) / len(table)
        assert abs(share - {"train": 0.7}.get(name, 0.15)) < 0.075
    subjects = table.groupby("group")["split"].nunique()
    assert (subjects == 1).all()


def test_group_split_depends_on_the_seed():
    ds = drowsiness_table()
    found = {tuple(assign_splits(ds, [0.7, 0.15, 0.15], seed)) for seed in range(10)}
    assert len(found) >= 4
    assert tuple(assign_splits(ds, [0.7, 0.15, 0.15], 3)) in found


def test_class_in_too_few_groups_is_named(cfg):
    labels = [0] * 60 + [1] * 6
    groups = [f"s{i % 10}" for i in range(60)] + ["s1"] * 3 + ["s4"] * 3
    with pytest.raises(DataError, match=r"class 'c1' is in 2 group\(s\) \(s1, s4\).*at least 3"):
        prepare_splits(cfg, synthetic_dataset(labels, groups))


def test_rows_without_a_group_are_groups_of_their_own():
    labels = [i % 2 for i in range(100)]
    groups = [f"s{i // 10}" for i in range(40)] + [""] * 60
    ds = synthetic_dataset(labels, groups)
    table = ds.table.assign(split=assign_splits(ds, [0.7, 0.15, 0.15], 0))
    loose = table[table["group"] == ""]
    # Spread over the splits, not kept together as one group of 60.
    assert loose["split"].value_counts().to_dict().keys() == {"train", "val", "test"}
    assert (table[table["group"] != ""].groupby("group")["split"].nunique() == 1).all()
    sizes = table["split"].value_counts()
    assert abs(sizes["train"] - 70) <= 1 and abs(sizes["val"] - 15) <= 1


def test_group_split_beside_a_fixed_test_set():
    # CIFAR-style: the test rows are fixed, the rest splits into train and val only,
    # so two groups per class are enough.
    labels = [0] * 30 + [1] * 30 + [0, 1] * 5
    groups = [f"a{i % 6}" for i in range(30)] + ["b0"] * 15 + ["b1"] * 15 + [""] * 10
    ds = synthetic_dataset(labels, groups)
    ds.table["fixed_split"] = [""] * 60 + ["test"] * 10
    table = ds.table.assign(split=assign_splits(ds, [0.7, 0.15, 0.15], 0))
    assert (table["split"][60:] == "test").all()
    for name in ("train", "val"):
        assert sorted(table[table["split"] == name]["label"].unique()) == [0, 1]


def test_unequal_groups_warn_that_fractions_are_off():
    labels = [i % 2 for i in range(95)]
    groups = ["big"] * 80 + [f"g{i % 3}" for i in range(15)]
    with pytest.warns(UserWarning, match=r"instead of data.splits.*'big', has 80 images"):
        assign_splits(synthetic_dataset(labels, groups), [0.7, 0.15, 0.15], 0)


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
