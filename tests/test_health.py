"""Data health: planted near-duplicates found across splits, corrections, label issues."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transferlab.benchmarks.health import altered, textured
from transferlab.data import DataError, load_dataset, prepare_splits
from transferlab.data.caching import images_digest
from transferlab.data.health.duplicates import (
    describe,
    image_descriptor,
    near_duplicate_block,
    near_duplicate_groups,
    near_duplicate_ids,
    split_table,
)
from transferlab.data.health.labels import internal_oof, rank_label_issues
from transferlab.data.health.run import data_health, out_of_fold

from .conftest import demo_config


@pytest.fixture
def planted(tmp_path):
    """A CSV dataset (train/val/test CSVs) of 60 pictures in 2 classes; altered copies of
    8 training pictures saved again into the test split."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "pictures"
    folder.mkdir()
    rows = {"train": [], "val": [], "test": []}
    for i in range(60):
        split = "train" if i < 40 else ("val" if i < 50 else "test")
        path = folder / f"p{i:02d}.png"
        Image.fromarray(textured(rng, 96)).save(path)
        rows[split].append((str(path), f"c{i % 2}"))
        if i < 8:
            copy = folder / f"copy_of_p{i:02d}.jpg"
            Image.fromarray(altered(rng, np.asarray(Image.open(path)))).save(copy)
            rows["test"].append((str(copy), f"c{i % 2}"))
    for split, items in rows.items():
        pd.DataFrame(items, columns=["path", "label"]).to_csv(folder / f"{split}.csv", index=False)
    cfg = demo_config(
        tmp_path,
        {
            "data.kind": "csv",
            "data.data_dir": str(folder),
            "data.name": "planted",
            "health.shown": 6,
        },
    )
    return cfg, {(f"copy_of_p{i:02d}.jpg", f"p{i:02d}.png") for i in range(8)}


def test_planted_copies_are_found_across_splits_with_no_false_pairs(planted):
    cfg, pairs = planted
    with pytest.warns(UserWarning, match="near-duplicate images span more than one split"):
        result = data_health(cfg)
    found = {
        tuple(sorted(s["path"].rsplit("/", 1)[-1] for s in g["samples"])) for g in result.groups
    }
    assert found == pairs
    assert all(g["cross_split"] and g["splits"] == ["test", "train"] for g in result.groups)
    audit = json.loads(
        (prepare_splits(cfg, load_dataset(cfg)).directory / "audit.json").read_text()
    )
    block = audit["near_duplicates"]
    assert block["cross_split_groups"] == 8 and len(block["test_images_in_cross_split_groups"]) == 8
    decisions = pd.read_csv(result.run_dir / "decisions.csv", keep_default_na=False)
    assert set(decisions["action"]) == {"keep"} and len(decisions) == 16
    assert (result.run_dir / "figures" / "near_duplicates.png").is_file()
    assert result.label_issues is None  # no k-fold run, no cached features


def test_descriptors_of_a_copy_stay_close_to_the_original():
    rng = np.random.default_rng(0)
    originals = [textured(rng, 96) for _ in range(30)]
    copies = [altered(rng, o) for o in originals[:10]]
    table = pd.DataFrame(
        {
            "sample_id": [f"o{i}" for i in range(30)] + [f"c{i}" for i in range(10)],
            "split": ["train"] * 30 + ["test"] * 10,
            "class_name": "x",
        }
    )
    descriptors = np.stack([image_descriptor(p) for p in originals + copies])
    groups = near_duplicate_groups(table, descriptors, 0.8)
    assert sorted(sorted(s["sample_id"] for s in g["samples"]) for g in groups) == sorted(
        sorted([f"o{i}", f"c{i}"]) for i in range(10)
    )


def write_corrections(path, rows) -> str:
    pd.DataFrame(rows, columns=["path", "action", "new_label"]).to_csv(path, index=False)
    return str(path)


def test_corrections_drop_and_relabel_keep_every_other_image_in_its_split(tmp_path, image_folder):
    cfg = demo_config(tmp_path, {"data.kind": "folder", "data.data_dir": str(image_folder)})
    before = prepare_splits(cfg, load_dataset(cfg))
    test_id, train_id = before.test["sample_id"][0], before.train["sample_id"][0]
    relabel_id = before.train["sample_id"][1]
    cfg.data.corrections = write_corrections(
        tmp_path / "fix.csv",
        [
            (str(image_folder / test_id), "drop", ""),
            (train_id, "keep", ""),
            (relabel_id, "relabel", "green" if not relabel_id.startswith("green") else "red"),
        ],
    )
    with pytest.warns(UserWarning, match="changes the test split"):
        after = prepare_splits(cfg, load_dataset(cfg))
    for split in ("train", "val", "test"):
        kept = set(before[split]["sample_id"]) - {test_id}
        assert set(after[split]["sample_id"]) == kept
    row = after.train.set_index("sample_id").loc[relabel_id]
    assert row["class_name"] != relabel_id.split("/")[0]
    settings = json.loads((after.directory / "settings.json").read_text())
    assert settings["corrections"]["drop"] == [test_id]
    record = json.loads((after.directory / "corrections.json").read_text())
    assert record["test_changed"] and record["dropped"][0]["split"] == "test"
    # Nothing on disk moved.
    assert (image_folder / test_id).is_file()


def test_bad_correction_lines_are_named_and_nothing_is_applied(tmp_path, image_folder):
    cfg = demo_config(tmp_path, {"data.kind": "folder", "data.data_dir": str(image_folder)})
    cfg.data.corrections = write_corrections(
        tmp_path / "bad.csv",
        [
            ("red/red_0.jpg", "drop", ""),
            ("red/missing.jpg", "drop", ""),
            ("red/red_1.png", "relabel", "purple"),
            ("red/red_2.jpg", "burn", ""),
        ],
    )
    with pytest.raises(DataError) as err:
        load_dataset(cfg)
    message = str(err.value)
    assert "nothing was applied" in message
    assert "line 3: image 'red/missing.jpg' is not in the dataset" in message
    assert "line 4: relabel 'red/red_1.png' as unknown class 'purple'" in message
    assert "line 5: unknown action 'burn'" in message
    assert "line 2" not in message


def test_flipped_labels_rank_on_top_of_a_separable_feature_set():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 8))
    labels = np.repeat(np.arange(3), 100)
    features = centres[labels] + rng.normal(size=(300, 8))
    flipped = rng.choice(300, 15, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    table = pd.DataFrame(
        {"sample_id": [str(i) for i in range(300)], "split": "train", "label": noisy}
    )
    issues = rank_label_issues(table, internal_oof(features, noisy, seed=0), ["a", "b", "c"])
    top = set(issues["sample_id"].head(15).astype(int))
    assert top == set(flipped.tolist())
    assert (issues["suggested"].head(15) != issues["label"].head(15)).all()


def test_split_audit_finds_cross_split_copies_as_a_data_finding(planted, tmp_path):
    from transferlab.reports.splits import data_findings, data_section, read_splits_files

    cfg, _ = planted
    # Making the splits runs the near-duplicate audit: no make data-health needed.
    with pytest.warns(UserWarning, match="8 group.s. of near-duplicate images span"):
        directory = prepare_splits(cfg, load_dataset(cfg)).directory
    assert len(near_duplicate_ids(directory)) == 16
    assert (directory / "near_duplicates.png").is_file()
    files = read_splits_files(cfg)
    assert [f.rule for f in data_findings(files)] == ["near_duplicates"]
    section = data_section(cfg, files, [])
    assert "8 across splits" in section and "near_duplicates.png)" in section
    assert "**Corrections:** none" in section
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "audit.json").write_text("{}")
    with pytest.raises(DataError, match="run make data-health first"):
        near_duplicate_ids(tmp_path / "old")


def test_small_and_plain_images_are_left_out_of_the_perceptual_search():
    from sklearn.datasets import load_digits

    # 8x8 digits: different digits of one class are as close as altered copies.
    digits = load_digits().images[:200]
    small = [np.repeat((d * 15).astype(np.uint8)[..., None], 3, axis=2) for d in digits]
    rng = np.random.default_rng(0)
    plain = [np.full((96, 96, 3), 120, np.uint8) + rng.integers(0, 4, (96, 96, 3), np.uint8)]
    plain += [np.full((96, 96, 3), 121, np.uint8)]
    described = [describe(p, min(p.shape[:2])) for p in small + plain]
    descriptors, reasons = (np.stack(x) for x in zip(*described, strict=True))
    assert list(reasons) == ["small"] * 200 + ["plain"] * 2
    table = pd.DataFrame(
        {"sample_id": [str(i) for i in range(202)], "split": "train", "class_name": "x"}
    )
    assert near_duplicate_groups(table, descriptors, 0.8, reasons=reasons) == []
    # Described and searched anyway, different digits would fall into false groups.
    anyway = np.stack([image_descriptor(p) for p in small])
    assert near_duplicate_groups(table.iloc[:200], anyway, 0.8)
    block = near_duplicate_block([], 202, 0.8, reasons)
    assert block["not_searched"] == {"smaller_than_40px": 200, "plain": 2}


def test_features_find_copies_the_pixels_cannot_and_rank_labels(planted):
    cfg, _ = planted
    table = split_table(load_dataset(cfg), prepare_splits(cfg, load_dataset(cfg)))
    # Cached backbone features (as experiments.features writes them, train/val/test
    # order): two classes apart, and one val image's features a copy of a train image's.
    rng = np.random.default_rng(0)
    labels = table["label"].to_numpy()
    features = rng.normal(size=(len(table), 16)) + 6 * np.eye(16)[labels]
    train_row, val_row = 9, int(np.flatnonzero(table["split"] == "val")[0])
    features[val_row] = features[train_row] + 1e-4
    folder = Path(cfg.output_dir) / "features"
    folder.mkdir(parents=True)
    np.savez(folder / f"{cfg.experiment}_test.npz", features=features.astype(np.float32))
    with pytest.warns(UserWarning, match="span more than one split"):
        result = data_health(cfg)
    by_features = [g for g in result.groups if g["found_by"] == ["features"]]
    assert [sorted(s["split"] for s in g["samples"]) for g in by_features] == [["train", "val"]]
    assert {s["sample_id"] for s in by_features[0]["samples"]} == set(
        table["sample_id"].iloc[[train_row, val_row]]
    )
    assert result.source == "internal cross-validation on cached features"
    assert result.label_issues is not None and result.outliers is not None
    assert (result.run_dir / "figures" / "outliers.png").is_file()
    # A k-fold run's out-of-fold probabilities win over the internal cross-validation.
    pool = table[table["split"] != "test"]
    oof = pd.DataFrame({"sample_id": pool["sample_id"][::-1]})
    oof["prob_c0"] = np.where(pool["label"][::-1] == 0, 0.9, 0.1)
    oof["prob_c1"] = 1 - oof["prob_c0"]
    cv_run = Path(cfg.output_dir) / "runs" / f"20260101-000000_{cfg.experiment}_cv"
    cv_run.mkdir(parents=True)
    oof.to_csv(cv_run / "oof_probabilities.csv", index=False)
    probabilities, source = out_of_fold(cfg, pool, None, ["c0", "c1"])
    assert source == f"k-fold run {cv_run.name}"
    assert (probabilities.argmax(axis=1) == pool["label"].to_numpy()).all()
    # ... while its images are those of the pool now (cv.json's digest); a run of images
    # replaced since (a fixed photo) is passed over, and the source says why.
    dataset = load_dataset(cfg)
    now = images_digest(dataset, dataset.rows(pool["sample_id"]))
    (cv_run / "cv.json").write_text(json.dumps({"images_digest": now}))
    assert out_of_fold(cfg, pool, None, ["c0", "c1"], now)[1] == f"k-fold run {cv_run.name}"
    (cv_run / "cv.json").write_text(json.dumps({"images_digest": "another"}))
    probabilities, source = out_of_fold(
        cfg, pool, features[table["split"] != "test"], ["c0", "c1"], now
    )
    assert source == (
        f"internal cross-validation on cached features (k-fold run {cv_run.name} is of "
        "images replaced since)"
    )
    assert probabilities.shape == (len(pool), 2)


def test_evaluate_reports_metrics_without_cross_split_copies(planted):
    from tests.tiny_model import build_tiny_model
    from transferlab.evaluation.evaluate import evaluate

    cfg, _ = planted
    cfg.eval.exclude_near_duplicates = True
    cfg.eval.bootstrap = 50
    path = Path(cfg.models_dir) / f"{cfg.experiment}_phase1_best.keras"
    path.parent.mkdir(parents=True)
    build_tiny_model(2, input_size=16).save(path)
    with pytest.warns(UserWarning, match="span more than one split"):
        result = evaluate(cfg)
    left_out = result.metrics["without_near_duplicates"]
    predictions = result.predictions
    kept = predictions[~predictions["sample_id"].str.contains("copy_of")]
    assert left_out["excluded"] == 8 and left_out["num_samples"] == len(kept) == 10
    assert left_out["accuracy"] == pytest.approx(
        (kept["true_label"] == kept["predicted_label"]).mean()
    )
    assert result.metrics["num_samples"] == 18  # the plain metrics keep every test image


def test_runs_before_and_after_a_test_correction_are_never_paired(tmp_path):
    from transferlab.experiments.compare import CompareError, EvaluateRun, check_same_images
    from transferlab.reports.changes import paired_test

    def run(name, ids, labels):
        predictions = pd.DataFrame(
            {"sample_id": ids, "true_label": labels, "prob_a": 0.6, "prob_b": 0.4}
        )
        return EvaluateRun(tmp_path / name, {}, {"split": "test"}, predictions)

    before = run("before", ["x", "y", "z"], [0, 1, 1])
    relabelled = run("relabelled", ["x", "y", "z"], [0, 0, 1])  # y relabelled a
    dropped = run("dropped", ["x", "z"], [0, 1])  # y dropped
    for after, why in ((relabelled, "different true labels"), (dropped, "3 images against 2")):
        with pytest.raises(CompareError, match=f"{why}.*data.corrections"):
            check_same_images([before, after])
        test = paired_test(before.predictions, after.predictions, ("before", "after"), {})
        assert test["untested"].startswith("scored on different images")
