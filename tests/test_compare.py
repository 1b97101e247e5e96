"""Paired tests (experiments.paired) and compare_runs on hand-written evaluate runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score
from statsmodels.stats.contingency_tables import mcnemar

from transferlab.experiments.compare import CompareError, compare_runs
from transferlab.experiments.paired import (
    accuracy_difference_interval,
    images_needed,
    mcnemar_exact,
    paired_bootstrap,
    verdict,
)

# --- paired statistics ------------------------------------------------------------------


def correctness(both: int, only_a: int, only_b: int, neither: int):
    """Two runs' per-image correctness with the given 2x2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_matches_statsmodels_and_a_hand_worked_table():
    a, b = correctness(50, 3, 10, 37)
    result = mcnemar_exact(a, b)
    assert (result["only_a_right"], result["only_b_right"], result["discordant"]) == (3, 10, 13)
    assert result["difference"] == pytest.approx(7 / 100)
    reference = mcnemar([[50, 3], [10, 37]], exact=True).pvalue
    assert result["p_value"] == pytest.approx(reference)
    # By hand: 2 * P(X <= 3), X ~ Binomial(13, 1/2) = 2 * (1 + 13 + 78 + 286) / 8192.
    assert result["p_value"] == pytest.approx(2 * 378 / 8192)
    assert mcnemar_exact(*correctness(5, 0, 0, 5))["p_value"] == 1.0  # no disagreement


def test_newcombe_interval_agrees_with_wald_on_many_images():
    a, b = correctness(1700, 60, 90, 150)
    interval = accuracy_difference_interval(a, b, 0.95)
    n, only_a, only_b = 2000, 60, 90
    diff = (only_b - only_a) / n
    se = math.sqrt(only_a + only_b - (only_b - only_a) ** 2 / n) / n
    z = stats.norm.ppf(0.975)
    assert interval["difference"] == pytest.approx(diff)
    assert interval["low"] == pytest.approx(diff - z * se, abs=0.002)
    assert interval["high"] == pytest.approx(diff + z * se, abs=0.002)
    # On few images it stays within [-1, 1], where Wald's would not.
    small = accuracy_difference_interval(*correctness(0, 0, 3, 0))
    assert -1 <= small["low"] < small["high"] <= 1


def test_paired_bootstrap_is_reproducible_and_covers_the_difference():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    prob_a = rng.random((300, 4))
    prob_b = prob_a.copy()
    prob_b[np.arange(300), y] += 0.6 * (rng.random(300) < 0.3)
    first = paired_bootstrap("macro_f1", y, prob_a, prob_b, resamples=300, seed=7)
    again = paired_bootstrap("macro_f1", y, prob_a, prob_b, resamples=300, seed=7)
    assert first == again
    expected = f1_score(y, prob_b.argmax(1), average="macro") - f1_score(
        y, prob_a.argmax(1), average="macro"
    )
    assert first["difference"] == pytest.approx(expected)
    assert first["low"] <= first["difference"] <= first["high"]
    assert first["p_value"] < 0.01
    same = paired_bootstrap("accuracy", y, prob_a, prob_a, resamples=100)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_images_needed_and_verdict_sentences():
    # Connor's formula, by hand: psi 0.05, diff 0.01 -> (1.96 sqrt(.05) + 0.8416 sqrt(.0499))^2/1e-4
    z_a, z_b = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    by_hand = (z_a * math.sqrt(0.05) + z_b * math.sqrt(0.05 - 0.0001)) ** 2 / 0.0001
    assert images_needed(0.01, 0.05) == math.ceil(by_hand)
    assert images_needed(0.0, 0.05) is None
    assert (
        verdict(0.021, 0.009, 0.033, 0.001, 2000, names=("A", "B"))
        == "B is better than A by 2.1 points [0.9, 3.3], p = 0.001"
    )
    assert verdict(-0.021, -0.033, -0.009, 0.0004, 2000) == (
        "A is better than B by 2.1 points [0.9, 3.3], p < 0.001"
    )
    assert verdict(0.005, -0.004, 0.014, 0.3, 2000, needed=9100) == (
        "no difference detectable on 2,000 images (p = 0.300; about 9,100 would be needed "
        "to detect 0.5 points)"
    )


# --- compare_runs on hand-written evaluate runs ------------------------------------------

NAMES = ["cat", "dog", "owl"]


def write_evaluate_run(
    root: Path, run_id: str, cfg_dict: dict, correct: np.ndarray, ids=None, split="test"
) -> Path:
    """An evaluate run directory: config.json, metrics.json, predictions.csv."""
    run = root / run_id
    (run / "figures").mkdir(parents=True)
    n = len(correct)
    y = np.arange(n) % 3
    predicted = np.where(correct, y, (y + 1) % 3)
    probabilities = np.full((n, 3), 0.1)
    probabilities[np.arange(n), predicted] = 0.8
    table = pd.DataFrame({"sample_id": ids if ids is not None else [f"img{i}" for i in range(n)]})
    table["true_label"] = y
    table["true_class"] = [NAMES[i] for i in y]
    table["predicted_label"] = predicted
    table["predicted_class"] = [NAMES[i] for i in predicted]
    table["confidence"] = 0.8
    table["correct"] = correct
    for i, name in enumerate(NAMES):
        table[f"prob_{name}"] = probabilities[:, i]
    table.to_csv(run / "predictions.csv", index=False)
    accuracy = float(correct.mean())
    metrics = {
        "split": split,
        "class_names": NAMES,
        "num_samples": n,
        "accuracy": accuracy,
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "balanced_accuracy": accuracy,
        "roc_auc": None,
        "model_path": f"models/{run_id[:15]}.keras",
        "model_phase": "phase1",
        "intervals": {"accuracy": {"low": accuracy - 0.05, "high": accuracy + 0.04}},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps(cfg_dict))
    return run


@pytest.fixture
def two_runs(cfg):
    """Runs A and B on the same 300 images: B right on 30 more (and wrong on 5 A got)."""
    root = Path(cfg.output_dir) / "runs"
    first = cfg.to_dict()
    second = cfg.to_dict()
    second["phase1"]["learning_rate"] = 0.01
    second["model"]["dropout"] = 0.5
    a = np.zeros(300, bool)
    a[:200] = True
    b = a.copy()
    b[200:230] = True
    b[:5] = False
    write_evaluate_run(root, "20260301-100000_demo_evaluate", first, a)
    write_evaluate_run(root, "20260301-110000_demo_evaluate", second, b)
    # The phase 1 runs that trained them: B's trained with label smoothing, which its
    # evaluate run's config no longer says.
    trained = dict(second, train=dict(second["train"], label_smoothing=0.1))
    for stamp, config, seconds in (("095000", first, 12.5), ("105000", trained, 30.0)):
        write_phase_run(root / f"20260301-{stamp}_demo_phase1", config, seconds)
    return root


def write_phase_run(run: Path, config: dict, seconds: float) -> None:
    (run / "figures").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    summary = {"phase": "phase1", "wall_time_s": seconds, "epochs_run": 3}
    (run / "summary.json").write_text(json.dumps(summary))
    history = {"epoch": [1, 2, 3], "val_loss": [1.0, 0.8, 0.7], "val_accuracy": [0.5, 0.6, 0.65]}
    pd.DataFrame(history).to_csv(run / "metrics.csv", index=False)


def test_compare_writes_differing_settings_and_verdicts(cfg, two_runs):
    result = compare_runs(cfg)  # default: the latest evaluate run of each model
    data = json.loads((result.run_dir / "compare.json").read_text())
    differing = {"phase1.learning_rate", "model.dropout", "train.label_smoothing"}
    assert set(data["settings"]) == differing | {"evaluated model"}
    assert data["settings"]["train.label_smoothing"] == [cfg.train.label_smoothing, 0.1]
    assert [m["training_time_s"] for m in data["metrics"]] == [12.5, 30.0]
    assert data["metrics"][1]["epochs"] == {"phase1": 3}
    assert (result.run_dir / "figures" / "curves.png").is_file()
    assert data["settings"]["phase1.learning_rate"] == [cfg.phase1.learning_rate, 0.01]
    (pair,) = data["pairs"]
    acc = pair["accuracy"]
    assert (acc["only_a_right"], acc["only_b_right"]) == (5, 30)
    assert acc["p_value"] == pytest.approx(mcnemar([[195, 5], [30, 70]], exact=True).pvalue)
    assert acc["verdict"].startswith("B is better than A in accuracy by 8.3 points [")
    assert pair["macro_f1"]["detectable"] and pair["macro_f1"]["low"] > 0
    page = result.page.read_text()
    assert "| `phase1.learning_rate` |" in page and "0.6667 [0.6167, 0.7067]" in page
    assert acc["verdict"] in page


def test_compare_says_when_no_difference_is_detectable(cfg, two_runs):
    b = np.zeros(300, bool)
    b[:199] = True
    b[250] = True  # one image each way, and one more: a 1-image difference
    b[251] = True
    run = two_runs / "20260301-110000_demo_evaluate"
    write_evaluate_run(two_runs, "20260301-120000_demo_evaluate", json.loads(
        (run / "config.json").read_text()), b)  # fmt: skip
    cfg.compare.runs = ["20260301-100000_demo_evaluate", "20260301-120000_demo_evaluate"]
    (pair,) = compare_runs(cfg).pairs
    assert not pair["accuracy"]["detectable"]
    assert pair["accuracy"]["verdict"].startswith("no difference in accuracy detectable on 300")
    assert "would be needed to detect 0.3 points" in pair["accuracy"]["verdict"]


def test_compare_refuses_runs_on_different_images(cfg, two_runs):
    other = np.ones(300, bool)
    ids = [f"other{i}" for i in range(300)]
    write_evaluate_run(two_runs, "20260302-100000_demo_evaluate", cfg.to_dict(), other, ids)
    cfg.compare.runs = ["20260301-100000_demo_evaluate", "20260302-100000_demo_evaluate"]
    refused = r"20260301-100000_demo_evaluate and 20260302.*not scored on the same images"
    with pytest.raises(CompareError, match=refused + r": their sample_id lists differ \(0 of 300"):
        compare_runs(cfg)
    before = sorted(p.name for p in two_runs.iterdir())
    val = write_evaluate_run(two_runs, "20260303-100000_demo_evaluate", {}, other, split="val")
    cfg.compare.runs = ["20260301-100000_demo_evaluate", val.name]
    with pytest.raises(CompareError, match="test split, the other on the val split.*re-run"):
        compare_runs(cfg)
    assert not [p for p in two_runs.iterdir() if p.name.endswith("_compare")], before


def test_compare_unknown_ids_and_too_few_runs(cfg, two_runs):
    cfg.compare.runs = ["20260301-100000_demo_evaluat", "nothing"]
    with pytest.raises(
        CompareError, match="did you mean '20260301-100000_demo_evaluate'.*Runs live"
    ):
        compare_runs(cfg)
    cfg.compare.runs = []
    for run in two_runs.iterdir():
        if run.name.startswith("20260301-11"):
            (run / "metrics.json").unlink()  # an unfinished evaluate run is not a default
    with pytest.raises(CompareError, match="at least two evaluate runs.*make evaluate"):
        compare_runs(cfg)
