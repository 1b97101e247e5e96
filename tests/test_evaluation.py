"""Evaluation: metrics equal scikit-learn's, figures for 2 and 10 classes, evaluate and predict."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from transferlab.data import DataError, ImageDataset
from transferlab.evaluation import (
    compute_metrics,
    evaluate,
    predict,
    predictions_table,
)
from transferlab.evaluation.calibration import calibration_path, save_calibration
from transferlab.evaluation.evaluate import write_figures
from transferlab.evaluation.metrics import group_metrics
from transferlab.experiments.stats import apply_temperature, wilson_interval
from transferlab.runs import read_json, write_json

from .tiny_model import build_tiny_model

# The module, not the function the package exports under the same name.
evaluate_module = importlib.import_module("transferlab.evaluation.evaluate")


def in_memory(images: np.ndarray, class_names: list[str]) -> ImageDataset:
    """A dataset holding ``images`` in memory, with sample ids s0, s1, ..."""
    table = pd.DataFrame(
        {"sample_id": [f"s{i}" for i in range(len(images))], "path": "", "label": 0}
    )
    return ImageDataset("figures", class_names, table, images)


def fixed_predictions(num_classes: int, count: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = np.arange(count) % num_classes
    logits = rng.normal(size=(count, num_classes))
    logits[np.arange(count), y_true] += 1.5  # better than chance, not perfect
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probabilities


@pytest.mark.parametrize("num_classes", [2, 10])
def test_metrics_equal_sklearn(num_classes):
    y_true, probabilities = fixed_predictions(num_classes)
    y_pred = probabilities.argmax(axis=1)
    names = [f"c{i}" for i in range(num_classes)]
    m = compute_metrics(y_true, probabilities, names, top_k=3)

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_precision"] == pytest.approx(
        skm.precision_score(y_true, y_pred, average="weighted", zero_division=0)
    )
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro"))
    per_class_f1 = skm.f1_score(y_true, y_pred, average=None)
    assert [m["per_class"][n]["f1"] for n in names] == pytest.approx(per_class_f1)
    assert sum(m["per_class"][n]["support"] for n in names) == len(y_true)
    if num_classes == 2:
        assert "top_k_accuracy" not in m
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, probabilities[:, 1]))
    else:
        assert m["top_k_accuracy"] == pytest.approx(
            skm.top_k_accuracy_score(y_true, probabilities, k=3)
        )
        assert m["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y_true, probabilities, multi_class="ovr")
        )
    matrix = skm.confusion_matrix(y_true, y_pred)
    worst = m["most_confused"][0]
    off = matrix - np.diag(np.diag(matrix))
    assert worst["count"] == off.max()
    assert m["weakest_classes"][0] == names[int(np.argmin(per_class_f1))]


def test_roc_auc_is_none_when_a_class_is_missing():
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.full((4, 3), 1 / 3)
    assert compute_metrics(y_true, probabilities, ["a", "b", "c"])["roc_auc"] is None


@pytest.mark.parametrize("num_classes", [2, 10])
def test_figures_written_and_non_empty(tmp_path, num_classes):
    y_true, probabilities = fixed_predictions(num_classes, count=40)
    names = [f"class {i}" for i in range(num_classes)]
    images = np.random.default_rng(0).integers(0, 255, (40, 12, 12, 3), dtype=np.uint8)
    table = predictions_table([f"s{i}" for i in range(40)], y_true, probabilities, names)
    figures = write_figures(tmp_path, in_memory(images, names), 12, table, probabilities)
    assert {p.name for p in figures} == {
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "roc_curves.png",
        "reliability.png",
        "prediction_grid.png",
        "confident_mistakes.png",
    }
    for path in figures:
        assert path.stat().st_size > 5000, path


def test_figures_with_100_classes_and_no_mistakes(tmp_path):
    names = [f"c{i}" for i in range(100)]
    y_true = np.arange(200) % 100
    probabilities = np.full((200, 100), 0.001)
    probabilities[np.arange(200), y_true] = 0.901
    images = np.zeros((200, 8, 8, 3), dtype=np.uint8)
    table = predictions_table([f"s{i}" for i in range(200)], y_true, probabilities, names)
    for path in write_figures(tmp_path, in_memory(images, names), 8, table, probabilities):
        assert path.stat().st_size > 5000


@pytest.fixture
def saved_digits_model(cfg):
    """An untrained tiny model on the digits demo's 8x8 inputs, saved where evaluate looks."""
    from pathlib import Path

    path = Path(cfg.models_dir) / f"{cfg.experiment}_phase1_best.keras"
    path.parent.mkdir(parents=True)
    build_tiny_model(10, input_size=8, image_size=16).save(path)
    return path


def test_evaluate_writes_run_dir(cfg, saved_digits_model, monkeypatch):
    cfg.eval.tta = 1
    cfg.eval.calibrate = True
    cfg.eval.bootstrap = 200
    # Digits has no group column: give the test split five subjects, as a CSV's would.
    real_splits = evaluate_module.prepare_splits

    def with_subjects(*args):
        splits = real_splits(*args)
        splits.test["group"] = [f"subject{i % 5}" for i in range(len(splits.test))]
        return splits

    monkeypatch.setattr(evaluate_module, "prepare_splits", with_subjects)
    # An untrained model's near-uniform probabilities: the fit runs to the search's edge.
    with pytest.warns(UserWarning, match="temperature 20 is at the edge"):
        result = evaluate(cfg)
    run = result.run_dir
    assert run.name.endswith("_demo_evaluate")
    predictions = pd.read_csv(run / "predictions.csv")
    metrics = read_json(run / "metrics.json")
    assert len(predictions) == metrics["num_samples"] > 200
    assert {"sample_id", "true_label", "predicted_label", "confidence", "prob_0", "prob_9"} <= set(
        predictions.columns
    )
    probs = predictions[[f"prob_{i}" for i in range(10)]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert metrics["accuracy"] == pytest.approx(
        (predictions["true_label"] == predictions["predicted_label"]).mean()
    )
    assert metrics["split"] == "test" and metrics["model_path"] == str(saved_digits_model)
    assert 0 <= metrics["tta_accuracy"] <= 1 and metrics["tta_passes"] == 1
    assert len(list((run / "figures").glob("*.png"))) == 6
    assert "accuracy" in str(result) and "ECE" in str(result)

    # Every headline metric has an interval around it; accuracy's is Wilson's.
    assert metrics["confidence"] == 0.95 and metrics["bootstrap_resamples"] == 200
    intervals = metrics["intervals"]
    assert set(intervals) == {"accuracy", "macro_f1", "balanced_accuracy", "roc_auc"}
    for name, bounds in intervals.items():
        assert bounds["low"] <= metrics[name] <= bounds["high"], name
    correct = int(round(metrics["accuracy"] * metrics["num_samples"]))
    assert (intervals["accuracy"]["low"], intervals["accuracy"]["high"]) == pytest.approx(
        wilson_interval(correct, metrics["num_samples"])
    )
    assert 0 <= metrics["ece"] <= 1
    per_group = metrics["per_group"]
    assert list(per_group) == [f"subject{i}" for i in range(5)]
    assert sum(g["n"] for g in per_group.values()) == metrics["num_samples"]
    in_subject0 = predictions.iloc[::5]
    assert per_group["subject0"]["accuracy"] == pytest.approx(in_subject0["correct"].mean())
    assert metrics["group_spread"]["groups"] == 5

    # Calibrated on val, scored on test, saved beside the model with its hash.
    calibration = metrics["calibration"]
    assert calibration["fitted_on"] == "val" and not calibration["in_sample"]
    assert calibration["temperature"] == pytest.approx(20, rel=1e-3)
    assert 0 <= calibration["ece_after"] <= calibration["ece_before"]
    saved = read_json(calibration_path(saved_digits_model))
    assert saved["temperature"] == calibration["temperature"]
    assert len(saved["model_sha1"]) == 40


def test_group_metrics_per_subject_with_wilson_intervals():
    y_true = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    y_pred = np.array([0, 1, 0, 0, 1, 1, 1, 1])
    groups = ["a", "a", "a", "b", "b", "c", "c", ""]
    result = group_metrics(y_true, y_pred, groups)
    per_group = result["per_group"]
    assert list(per_group) == ["a", "b", "c"]  # the ungrouped image is left out
    assert [g["n"] for g in per_group.values()] == [3, 2, 2]
    assert [g["accuracy"] for g in per_group.values()] == pytest.approx([2 / 3, 1.0, 0.5])
    assert (per_group["a"]["low"], per_group["a"]["high"]) == wilson_interval(2, 3)
    spread = result["group_spread"]
    assert spread["groups"] == 3
    assert spread["mean"] == pytest.approx(13 / 18)
    assert spread["std"] == pytest.approx(np.std([2 / 3, 1.0, 0.5], ddof=1))
    assert (spread["min"], spread["max"]) == (0.5, 1.0)
    assert group_metrics(y_true, y_pred, [""] * 8) is None


def test_predict_applies_the_models_own_temperature_only(saved_digits_model):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    columns = [f"prob_class_{i}" for i in range(10)]
    raw = predict(saved_digits_model, pixels)
    assert raw.attrs["temperature"] is None
    save_calibration(saved_digits_model, 0.25, fitted_on="val")
    calibrated = predict(saved_digits_model, pixels)
    assert calibrated.attrs["temperature"] == 0.25
    np.testing.assert_allclose(
        calibrated[columns].to_numpy(),
        apply_temperature(raw[columns].to_numpy(), 0.25),
        atol=1e-6,
    )
    assert np.allclose(predict(saved_digits_model, pixels, calibrate=False)[columns], raw[columns])
    # A temperature fitted to another version of the file is never applied.
    record = read_json(calibration_path(saved_digits_model))
    write_json(calibration_path(saved_digits_model), {**record, "model_sha1": "0" * 40})
    with pytest.warns(UserWarning, match="fitted to another version.*not applied"):
        stale = predict(saved_digits_model, pixels)
    assert stale.attrs["temperature"] is None
    assert np.allclose(stale[columns], raw[columns])


def test_evaluate_missing_model_is_a_clear_error(cfg):
    with pytest.raises(FileNotFoundError, match="no best model of experiment 'demo'.*train-phase1"):
        evaluate(cfg)
    with pytest.raises(FileNotFoundError, match="model file .*nope.keras does not exist"):
        evaluate(cfg, model_path=cfg.models_dir + "/nope.keras")


def test_predict_any_size_and_mode(tmp_path, saved_digits_model):
    from .conftest import write_image

    rng = np.random.default_rng(0)
    folder = tmp_path / "new"
    write_image(folder / "big.png", rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    write_image(folder / "grey.jpg", rng.integers(0, 255, (9, 9), dtype=np.uint8))
    write_image(folder / "rgba.png", rng.integers(0, 255, (5, 7, 4), dtype=np.uint8))
    names = [str(i) for i in range(10)]
    table = predict(saved_digits_model, folder, class_names=names, output_csv=tmp_path / "p.csv")
    assert len(table) == 3 and table["predicted_class"].isin(names).all()
    assert pd.read_csv(tmp_path / "p.csv", dtype={"predicted_class": str}).shape == table.shape
    # Without class names and no training run to read them from: class_0...
    assert predict(saved_digits_model, folder / "big.png")["predicted_class"][0].startswith(
        "class_"
    )


def test_predict_lists_unreadable_files_and_goes_on(tmp_path, saved_digits_model):
    from .conftest import write_image

    good = write_image(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="1 image.*could not be read"):
        table = predict(saved_digits_model, [bad, good], output_csv=tmp_path / "p.csv")
    assert table["sample_id"].tolist() == [str(good)]
    skipped = pd.read_csv(tmp_path / "p_skipped.csv")
    assert skipped["path"].tolist() == [str(bad)]
    assert "cannot read image" in skipped["reason"][0]
    with pytest.raises(DataError, match="none of the 1 image"), pytest.warns(UserWarning):
        predict(saved_digits_model, [bad])


def test_predict_takes_the_arrays_people_pass(saved_digits_model):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    expected = predict(saved_digits_model, pixels)["confidence"].to_numpy()
    same = {
        "float 0..255": pixels.astype(np.float32),
        "int64": pixels.astype(np.int64),
        "uint16 (full range)": pixels.astype(np.uint16) * 257,
        "list of arrays": list(pixels),
    }
    for name, images in same.items():
        got = predict(saved_digits_model, images)["confidence"].to_numpy()
        assert np.allclose(got, expected, atol=1e-6), name
    # Grey arrays, 2-D or with one channel, and RGBA are pixels too.
    assert len(predict(saved_digits_model, pixels[0, :, :, 0])) == 1
    assert len(predict(saved_digits_model, pixels[:, :, :, :1])) == 3
    refused = {
        "within 0..1": (pixels / 255.0, "Multiply it by 255"),
        "normalized": ((pixels - 128.0) / 64.0, "values from -2 to"),
        "above 255": (pixels.astype(np.float32) * 2, "must lie in 0..255"),
        "NaN": (np.full((1, 8, 8, 3), np.nan), "NaN"),
        "five channels": (np.zeros((2, 8, 8, 5), np.uint8), "has shape"),
    }
    for name, (images, message) in refused.items():
        with pytest.raises(DataError, match=message):
            predict(saved_digits_model, images)
        assert name
