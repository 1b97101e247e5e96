"""k-fold cross-validation: folds, out-of-fold probabilities, intervals and refusals.

The digits run computes its backbone features once for the module; every other run
here reads them from the cache or uses a tiny CSV dataset on a small backbone.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import demo_config, write_image
from transferlab.data import load_dataset, prepare_splits
from transferlab.data.caching import images_digest
from transferlab.experiments.cv import CVError, assign_folds, cross_validate, mean_interval
from transferlab.experiments.features import FeatureTable
from transferlab.runs import find_runs, splits_dir

K = 3


@pytest.fixture(scope="module")
def digits_cv(tmp_path_factory):
    """The shrunk demo (10 digits per class, 32 px) cross-validated once, 3 folds."""
    root = tmp_path_factory.mktemp("cv")
    cfg = demo_config(
        root,
        {
            "model.image_size": 32,
            "train.batch_size": 16,
            "phase1.epochs": 1,
            "data.subset_per_class": 10,
            "cv.folds": K,
        },
    )
    return cfg, cross_validate(cfg)


def split_ids(cfg, *names):
    folder = splits_dir(cfg)
    return set().union(
        *(pd.read_csv(folder / f"{n}.csv", dtype={"sample_id": str})["sample_id"] for n in names)
    )


def test_folds_are_disjoint_cover_train_and_val_and_leave_test_alone(digits_cv):
    cfg, result = digits_cv
    folds = pd.read_csv(result.run_dir / "folds.csv", dtype={"sample_id": str})
    held_out = folds[folds["role"] == "held_out"]
    # Each image is held out exactly once and trains in every other fold.
    assert held_out["sample_id"].is_unique
    assert (folds.groupby("sample_id")["role"].apply(lambda r: (r == "train").sum()) == K - 1).all()
    assert set(held_out["sample_id"]) == split_ids(cfg, "train", "val")
    assert not set(folds["sample_id"]) & split_ids(cfg, "test")
    # Stratified: each class's held-out count differs by at most one between folds.
    counts = held_out.groupby(["class_name", "fold"]).size().unstack(fill_value=0)
    assert counts.shape[1] == K
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1


def test_oof_probabilities_one_row_per_image_and_the_metrics_agree(digits_cv):
    _, result = digits_cv
    oof = pd.read_csv(result.run_dir / "oof_probabilities.csv", dtype={"sample_id": str})
    probs = oof.filter(regex="^prob_").to_numpy()
    assert oof["sample_id"].is_unique and len(oof) == len(result.oof)
    assert probs.shape[1] == 10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == oof["predicted"]).all()
    assert {"sample_id", "path", "label", "class_name", "fold", "group", "split"} <= set(oof)
    # Each image's fold is the fold it was held out in.
    folds = pd.read_csv(result.run_dir / "folds.csv", dtype={"sample_id": str})
    held_out = folds[folds["role"] == "held_out"].set_index("sample_id")["fold"]
    assert (oof.set_index("sample_id")["fold"] == held_out.loc[oof["sample_id"]]).all()

    record = json.loads((result.run_dir / "cv.json").read_text())
    correct = oof["predicted"] == oof["label"]
    per_fold = correct.groupby(oof["fold"]).mean()
    assert [f["accuracy"] for f in record["per_fold"]] == pytest.approx(per_fold.tolist())
    assert record["out_of_fold"]["accuracy"] == pytest.approx(correct.mean())
    assert record["mean"]["accuracy"]["mean"] == pytest.approx(per_fold.mean())
    assert sum(f["n"] for f in record["per_fold"]) == len(oof) == record["images"]
    assert record["folds"] == K and record["grouped"] is False
    # The images cross-validated, as data health checks them (train + val, in order).
    cfg, _ = digits_cv
    dataset = load_dataset(cfg)
    assert record["images_digest"] == images_digest(dataset, dataset.rows(oof["sample_id"]))


def test_the_page_figure_and_summary_line(digits_cv):
    _, result = digits_cv
    page = (result.run_dir / "cv.md").read_text()
    assert "| mean |" in page and "| out-of-fold |" in page and "t-interval" in page
    assert (result.run_dir / "figures" / "folds.png").stat().st_size > 0
    assert (result.run_dir / "config.json").is_file()
    line = str(result)
    assert line.startswith(f"{K}-fold cross-validation on {len(result.oof)} images")
    assert "t-interval over folds" in line


def test_mean_interval_is_the_t_interval_over_folds():
    values = np.array([0.80, 0.85, 0.90, 0.82, 0.88])
    got = mean_interval(values)
    mean, sd = values.mean(), values.std(ddof=1)
    half = stats.t.ppf(0.975, df=4) * sd / np.sqrt(5)
    assert stats.t.ppf(0.975, df=4) == pytest.approx(2.776445, abs=1e-6)  # the table value
    assert (got["low"], got["high"]) == pytest.approx((mean - half, mean + half))
    expected = stats.t.interval(0.95, 4, loc=mean, scale=sd / np.sqrt(5))
    assert (got["low"], got["high"]) == pytest.approx(expected)
    # Equal folds: a zero-width interval, not NaN.
    assert mean_interval(np.array([0.5, 0.5, 0.5]))["high"] == 0.5


def test_k_larger_than_a_class_is_refused_naming_it(digits_cv):
    cfg, result = digits_cv
    counts = result.oof.groupby("class_name").size()
    smallest, count = counts.idxmin(), int(counts.min())
    big = copy.deepcopy(cfg)
    big.cv.folds = count + 1
    runs_before = find_runs(cfg.output_dir, cfg.experiment, "cv")
    refusal = rf"class '{smallest}' has only {count} images.*largest K allowed is {count}\."
    with pytest.raises(CVError, match=refusal):
        cross_validate(big)
    # Nothing half-written looks like a finished run.
    assert find_runs(cfg.output_dir, cfg.experiment, "cv") == runs_before


def test_too_few_images_and_single_image_classes_are_refused():
    with pytest.raises(CVError, match="at least 6 train"):
        assign_folds(np.array([0, 0, 1, 1, 1]), np.array([""] * 5), 3, 0, ["a", "b"], False)
    labels = np.array([0] * 6 + [1])
    with pytest.raises(CVError, match="class 'b' has only 1 image"):
        assign_folds(labels, np.array([""] * 7), 2, 0, ["a", "b"], False)


def test_grouped_folds_keep_every_group_whole_and_name_a_class_in_too_few_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"subject{i}" for i in range(12)], 10)
    labels = rng.integers(0, 3, size=groups.size)
    folds = assign_folds(labels, groups, 4, 42, ["a", "b", "c"], grouped=True)
    frame = pd.DataFrame({"group": groups, "fold": folds, "label": labels})
    assert (frame.groupby("group")["fold"].nunique() == 1).all()
    assert (frame.groupby("fold")["label"].nunique() == 3).all()

    labels[(labels == 2) & ~np.isin(groups, ["subject0", "subject1", "subject2"])] = 0
    with pytest.raises(CVError, match=r"class 'c' has only 3 groups.*largest K allowed is 3\."):
        assign_folds(labels, groups, 4, 42, ["a", "b", "c"], grouped=True)


def grouped_csv(root):
    """Two classes (bright, dark) photographed in 8 subjects, 2 images of each per subject."""
    rng = np.random.default_rng(1)
    lines = ["path,label,subject"]
    for subject in range(8):
        for label, level in (("bright", 200), ("dark", 40)):
            for i in range(2):
                pixels = rng.integers(0, 40, size=(16, 16, 3), dtype=np.uint8) + level
                name = f"s{subject}_{label}_{i}.png"
                write_image(root / name, pixels.astype(np.uint8))
                lines.append(f"{name},{label},subject{subject}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def grouped_config(tmp_path, **overrides):
    """A small backbone from scratch at 16 px on the grouped CSV dataset."""
    return demo_config(
        tmp_path,
        {
            "data.kind": "csv",
            "data.data_dir": str(grouped_csv(tmp_path / "images")),
            "data.group_column": "subject",
            "data.splits": [0.5, 0.25, 0.25],
            "data.input_size": 16,
            "model.backbone": "small_resnet",
            "model.image_size": 16,
            "train.batch_size": 16,
            # Mean colours tell bright from dark: enough epochs to learn it, in milliseconds.
            "phase1.epochs": 40,
            "phase1.learning_rate": 0.05,
            "cv.folds": 2,
            **overrides,
        },
    )


def pixel_features(cfg, splits=("train", "val", "test")):
    """A stand-in for the backbone (its features are the digits run's business): each
    image's mean colour, in the FeatureTable the real one returns."""
    dataset = load_dataset(cfg)
    parts = prepare_splits(cfg, dataset)
    table = pd.concat([parts[n].assign(split=n) for n in splits], ignore_index=True)
    pixels = dataset.load_images(table["sample_id"], 16).astype(np.float32)
    return FeatureTable(
        sample_ids=table["sample_id"].to_numpy(),
        labels=table["label"].to_numpy(),
        splits=table["split"].to_numpy(),
        groups=table["group"].astype(str).to_numpy(),
        features=pixels.mean(axis=(1, 2)) / 255,
        class_names=list(dataset.class_names),
    )


def test_grouped_csv_run_keeps_subjects_in_one_fold_and_reports_each(tmp_path, monkeypatch):
    monkeypatch.setattr("transferlab.experiments.cv.backbone_features", pixel_features)
    cfg = grouped_config(tmp_path)
    result = cross_validate(cfg)
    folds = pd.read_csv(result.run_dir / "folds.csv", keep_default_na=False)
    held_out = folds[folds["role"] == "held_out"]
    assert (held_out.groupby("group")["fold"].nunique() == 1).all()
    assert held_out["path"].str.endswith(".png").all()
    test_subjects = set(pd.read_csv(splits_dir(cfg) / "test.csv")["group"])
    assert test_subjects and not test_subjects & set(folds["group"])

    groups = pd.read_csv(result.run_dir / "groups.csv")
    assert set(groups["group"]) == set(held_out["group"])
    assert groups["n"].sum() == len(held_out)
    assert ((groups["low"] <= groups["accuracy"]) & (groups["accuracy"] <= groups["high"])).all()
    record = json.loads((result.run_dir / "cv.json").read_text())
    assert record["grouped"] is True and record["groups"]["groups"] == len(groups)
    assert (result.run_dir / "figures" / "group_accuracy.png").is_file()
    assert "Per-group performance" in (result.run_dir / "cv.md").read_text()
    assert result.pooled["accuracy"] >= 0.9


@pytest.mark.slow
def test_phase2_per_fold_trains_each_fold_as_its_own_experiment(tmp_path):
    cfg = grouped_config(tmp_path, **{"cv.phase2": True, "phase1.epochs": 2, "phase2.epochs": 1})
    result = cross_validate(cfg)
    second = pd.read_csv(result.run_dir / "oof_probabilities_phase2.csv")
    assert sorted(second["sample_id"]) == sorted(result.oof["sample_id"])
    np.testing.assert_allclose(second.filter(regex="^prob_").sum(axis=1), 1.0, atol=1e-5)
    assert result.phase2["experiments"] == ["demo_cv2fold1", "demo_cv2fold2"]
    # Each fold trained on its own splits: its val split is exactly its held-out fold.
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.data.name = "csv_cv2fold1"
    val = set(pd.read_csv(splits_dir(fold_cfg) / "val.csv")["sample_id"])
    assert val == set(result.oof.loc[result.oof["fold"] == 0, "sample_id"])
    assert "Phase 2 per fold" in (result.run_dir / "cv.md").read_text()
