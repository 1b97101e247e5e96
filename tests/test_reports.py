"""Report rules on real and synthetic histories; reports built from hand-written run files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from transferlab.reports.checkpoint import write_day_checkpoint
from transferlab.reports.rules import (
    check_class_balance,
    check_leakage,
    diagnose,
    gap_to_target,
)
from transferlab.reports.training import write_training_report

from .conftest import FIXTURES, write_image

SEEDS = FIXTURES / "seed_histories"


def seed_history(name: str) -> pd.DataFrame:
    path = SEEDS / name
    if not path.is_file():
        pytest.skip(f"seed history {path} is absent (expected ../shared/fixtures beside the repo)")
    return pd.read_csv(path)


# --- rules on the real histories -------------------------------------------------------


def test_drowsiness_is_severe_overfitting():
    d = diagnose(seed_history("drowsiness_resnet50.csv"), num_classes=2)
    assert d.verdict == "overfitting"
    overfit = next(f for f in d.findings if f.rule == "overfitting")
    assert overfit.severity == "critical"
    assert "0.9603 vs validation 0.4790 at epoch 3" in overfit.message
    assert "every epoch" in overfit.message  # val loss 0.83 -> 1.21 -> 1.42
    assert "best_epoch_early" in d.rules and "too_early" not in d.rules


def test_fused_image_meta_repeats_validation_metrics():
    d = diagnose(seed_history("fused_image_meta_resnet50.csv"), num_classes=2)
    assert d.verdict == "repeated validation metrics"
    repeated = next(f for f in d.findings if f.rule == "repeated_validation")
    assert repeated.evidence["count"] == 14
    assert repeated.evidence["values"] == [0.959, 0.86, 0.949, 0.902]
    assert "too small" in repeated.message
    assert "overfitting" not in d.rules  # no severe accuracy gap...
    rising = next(f for f in d.findings if f.rule == "val_loss_rising")
    assert (
        "from 0.1306 (epoch 3) to 0.2196 (epoch 30)" in rising.message
    )  # ...but val loss drifts up


def test_dandelion_is_too_early():
    d = diagnose(seed_history("dandelion_grass_resnet18.csv"), num_classes=2)
    assert d.verdict == "too early to judge"
    assert d.rules == ["too_early"]
    assert "still improving" in d.findings[0].message


# --- rules on synthetic histories ------------------------------------------------------


def history(val_accuracy, accuracy=None, loss=None, val_loss=None) -> pd.DataFrame:
    n = len(val_accuracy)
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "loss": loss or list(np.linspace(1.0, 0.5, n)),
            "accuracy": accuracy or list(val_accuracy),
            "val_loss": val_loss or list(np.linspace(1.1, 0.6, n)),
            "val_accuracy": val_accuracy,
        }
    )


def test_chance_level_names_the_usual_causes():
    # The CIFAR-10 report: frozen ResNet50 at 10.3% after 12 epochs.
    d = diagnose(history([0.098, 0.101, 0.103, 0.099] * 3), num_classes=10)
    assert d.verdict == "chance-level accuracy"
    finding = d.findings[0]
    assert finding.severity == "critical" and "0.1030" in finding.message
    for cause in ("preprocess", "BatchNorm", "labels"):
        assert cause in finding.action
    assert diagnose(history([0.5, 0.7, 0.8]), num_classes=10).verdict != "chance-level accuracy"


def test_healthy_history_has_no_problems():
    d = diagnose(history([0.5, 0.6, 0.7, 0.75, 0.8, 0.82]), num_classes=3)
    assert d.verdict == "no problems found" and d.findings == []


def test_stalled_and_oscillating():
    stalled = diagnose(history([0.5, 0.7, 0.8, 0.795, 0.8, 0.799, 0.797, 0.8]), num_classes=3)
    assert "stalled" in stalled.rules
    osc = diagnose(history([0.3, 0.5, 0.32, 0.48, 0.31, 0.5, 0.35, 0.49]), num_classes=10)
    assert osc.verdict == "oscillating validation"
    assert (
        "between 0.3000 and 0.5000"
        in next(f for f in osc.findings if f.rule == "oscillating").message
    )
    # A steep first climb, then small wiggles near the top: converging, not oscillating.
    climbing = diagnose(history([0.1, 0.49, 0.66, 0.8, 0.76, 0.8, 0.77]), num_classes=10)
    assert "oscillating" not in climbing.rules


def test_balance_and_leakage_rules():
    balanced = {"train": {"a": 50, "b": 50}, "val": {"a": 10, "b": 10}, "test": {"a": 10, "b": 10}}
    assert check_class_balance(balanced) == []
    skewed = {"train": {"a": 90, "b": 10}, "val": {"a": 5, "b": 5}, "test": {"a": 10, "b": 0}}
    rules = {(f.rule, f.evidence.get("split")) for f in check_class_balance(skewed)}
    assert rules == {
        ("class_imbalance", None),
        ("split_imbalance", "val"),
        ("split_imbalance", "test"),
    }
    assert check_leakage({"duplicates_across_splits": [], "shared_groups": [], "clean": True}) == []
    audit = {"duplicates_across_splits": [{"hash": "x"}], "shared_groups": [{"group": "s1"}]}
    assert [f.severity for f in check_leakage(audit)] == ["critical", "critical"]
    assert gap_to_target(0.85, 0.9, "test accuracy").evidence["gap"] == pytest.approx(0.05)
    assert gap_to_target(0.95, 0.9, "test accuracy").rule == "target_met"


# --- reports from a hand-written run directory -----------------------------------------

PHASE1 = pd.DataFrame(
    {
        "epoch": [1, 2, 3, 4, 5],
        "loss": [1.52, 1.01, 0.61, 0.35, 0.21],
        "accuracy": [0.601, 0.752, 0.853, 0.921, 0.972],
        "macro_f1": [0.581, 0.741, 0.849, 0.918, 0.97],
        "val_loss": [1.21, 1.02, 0.953, 1.051, 1.253],
        "val_accuracy": [0.553, 0.621, 0.644, 0.631, 0.612],
        "val_macro_f1": [0.531, 0.608, 0.637, 0.622, 0.598],
        "learning_rate": [0.003] * 5,
        "epoch_time": [11.2, 9.8, 9.7, 9.9, 9.6],
    }
)
PHASE2 = pd.DataFrame(
    {
        "epoch": [1, 2, 3],
        "loss": [0.83, 0.71, 0.64],
        "accuracy": [0.702, 0.743, 0.768],
        "macro_f1": [0.69, 0.735, 0.761],
        "val_loss": [0.92, 0.88, 0.86],
        "val_accuracy": [0.662, 0.689, 0.701],
        "val_macro_f1": [0.65, 0.681, 0.694],
        "learning_rate": [0.0001, 0.0001, 5e-05],
        "epoch_time": [31.5, 30.2, 30.9],
    }
)


def summary(phase: str, history: pd.DataFrame, best_epoch: int, params: tuple[int, int]) -> dict:
    row = history[history["epoch"] == best_epoch].iloc[0]
    return {
        "experiment": "demo",
        "phase": phase,
        "total_params": params[0] + params[1],
        "trainable_params": params[0],
        "non_trainable_params": params[1],
        "best_epoch": best_epoch,
        "best_metrics": {k: float(row[k]) for k in ("val_accuracy", "val_macro_f1", "val_loss")},
        "monitor": "val_accuracy",
        "epochs_run": int(len(history)),
        "stop_reason": "early_stopping" if phase == "phase1" else "completed",
        "wall_time_s": float(history["epoch_time"].sum()) + 2.37,
        "device": "CPU",
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
        "model_path": f"models/demo_{phase}_best.keras",
        "input_size": 8,
        "image_size": 32,
        "backbone": "resnet50",
        "num_classes": 3,
        "class_names": ["cat", "dog", "owl"],
        "feature_cached": phase == "phase1",
    }


def write_png(path: Path) -> Path:
    return write_image(path, np.full((10, 10, 3), 128, dtype=np.uint8))


@pytest.fixture
def run_files(cfg, tmp_path):
    """Phase 1, phase 2 and evaluate run directories, splits files and a journal, by hand."""
    runs = Path(cfg.output_dir) / "runs"
    for stamp, phase, hist, best, params in (
        ("20260301-101500", "phase1", PHASE1, 3, (6147, 23587712)),
        ("20260301-111500", "phase2", PHASE2, 3, (14970883, 8622976)),
    ):
        run = runs / f"{stamp}_demo_{phase}"
        run.mkdir(parents=True)
        hist.to_csv(run / "metrics.csv", index=False)
        (run / "summary.json").write_text(json.dumps(summary(phase, hist, best, params)))
        write_png(run / "figures" / "training_curves.png")
    evaluate = runs / "20260301-121500_demo_evaluate"
    metrics = {
        "accuracy": 0.6933,
        "balanced_accuracy": 0.6911,
        "macro_f1": 0.6874,
        "split": "test",
        "model_path": "models/demo_phase2_best.keras",
        "per_class": {
            "cat": {"precision": 0.7143, "recall": 0.6522, "f1": 0.6818, "support": 23},
            "dog": {"precision": 0.6087, "recall": 0.5833, "f1": 0.5957, "support": 24},
            "owl": {"precision": 0.7586, "recall": 0.8462, "f1": 0.80, "support": 26},
        },
        "most_confused": [{"true": "dog", "predicted": "cat", "count": 6}],
        "weakest_classes": ["dog", "cat", "owl"],
        "strongest_classes": ["owl", "cat", "dog"],
        "tta_passes": 2,
        "tta_accuracy": 0.7067,
    }
    (evaluate / "figures").mkdir(parents=True)
    (evaluate / "metrics.json").write_text(json.dumps(metrics))
    for name in ("confusion_matrix_normalized.png", "roc_curves.png"):
        write_png(evaluate / "figures" / name)
    splits = Path(cfg.output_dir) / "splits" / "digits"
    splits.mkdir(parents=True)
    balance = {"train": {"cat": 70, "dog": 21, "owl": 69}, "val": {"cat": 15, "dog": 15, "owl": 15}}
    (splits / "balance.json").write_text(json.dumps(balance))
    audit = {"duplicates_across_splits": [], "shared_groups": [], "clean": True}
    (splits / "audit.json").write_text(json.dumps(audit))
    journal = tmp_path / "journal.yaml"
    journal.write_text(
        yaml.safe_dump(
            {
                "days": [
                    {
                        "sprint": 2,
                        "day": 4,
                        "completed": ["Phase 2 fine-tuning from conv5"],
                        "decisions": [
                            {
                                "id": "DEC-004",
                                "decision": "Fine-tune conv5 only",
                                "reason": "conv4 overfit within 2 epochs",
                            }
                        ],
                        "next": ["Add flip and 0.1 rotation augmentation"],
                    }
                ]
            }
        )
    )
    cfg.report.journal = str(journal)
    cfg.report.sprint, cfg.report.day, cfg.report.target_accuracy = 2, 4, 0.85
    return {
        "runs": runs,
        "files": [*runs.rglob("*.csv"), *runs.rglob("*.json"), *splits.glob("*.json"), journal],
    }


NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:e[-+]\d+)?(?![\w.])")


def numbers_in(markdown: str) -> list[str]:
    """Numbers in prose and tables: code spans, link targets and the title's IDs left out."""
    text = re.sub(r"`[^`]*`", "", markdown)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    return NUMBER.findall(text)


def traceable(shown: str, values: set[float]) -> bool:
    """Whether ``shown`` is some value, rounded the way the report prints it."""
    x = float(shown)
    if "e" in shown:
        return any(v and abs(v - x) <= abs(v) * 0.01 for v in values)
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return any(abs(v - x) <= 0.5 * 10**-decimals + 1e-9 for v in values)


def file_values(paths) -> set[float]:
    values = set()
    for path in paths:
        values |= {
            float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", Path(path).read_text())
        }
    return values


def test_day_checkpoint_holds_its_files_numbers_and_nothing_else(cfg, run_files):
    path = write_day_checkpoint(cfg)
    text = path.read_text()
    assert path.name == "sprint02_day04.md" and path.parent == Path(cfg.report.output_dir)
    assert text.startswith("# transferlab demo — Sprint 2, Day 4 checkpoint")
    assert "**Date:** 2026-03-01" in text  # from the newest run's id, not today's clock

    # Every number is a file value, a config value, or a difference of two file values.
    allowed = file_values(run_files["files"]) | {2, 4, 0.85, 0.85 - 0.6933}
    for hist in (PHASE1, PHASE2):
        allowed |= set(hist["accuracy"] - hist["val_accuracy"]) | set(
            hist["val_loss"] - hist["loss"]
        )
    shown = numbers_in(text.replace("2026-03-01", ""))  # the date comes from the run ids
    untraceable = [n for n in shown if not traceable(n, allowed)]
    assert untraceable == [], untraceable

    # ...and the numbers that matter are there.
    for expected in ("0.6440", "0.7010", "0.6933", "23593859", "6147", "23587712", "DEC-004"):
        assert expected in text, expected
    assert "| Test accuracy (test) | — | 0.6933 |" in text
    assert "| Cat |" not in text and "| dog | 0.6087 | 0.5833 | 0.5957 | 24 |" in text
    assert "severe overfitting" in text and "0.1567 below the target 0.8500" in text
    assert "Add flip and 0.1 rotation augmentation" in text
    assert "imbalanced" in text  # 70 cats vs 21 dogs in train

    # Figures are copied beside the report and linked relatively.
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        assert (path.parent / link).is_file(), link
    assert "sprint02_day04_files/evaluate_roc_curves.png" in links

    # Regenerating from the same files gives the same markdown.
    assert write_day_checkpoint(cfg).read_text() == text


def test_training_report_tables_and_diagnosis(cfg, run_files, tmp_path):
    run = run_files["runs"] / "20260301-101500_demo_phase1"
    path = write_training_report(run, tmp_path / "reports")
    text = path.read_text()
    assert path.name == "training_20260301-101500_demo_phase1.md"
    assert "| 5 | 0.2100 | 0.9720 | 0.9700 | 1.2530 | 0.6120 | 0.5980 | 0.0030 | 9.6000 |" in text
    assert "| 5 | 0.9720 | 0.6120 | 0.3600 | 0.2100 | 1.2530 | 1.0430 |" in text  # the gap table
    assert (
        "`val_accuracy`: 0.5530 at epoch 1, best 0.6440 at epoch 3, last 0.6120 at epoch 5" in text
    )
    assert "**Verdict: overfitting.**" in text
    allowed = file_values([run / "metrics.csv", run / "summary.json"])
    allowed |= set(PHASE1["accuracy"] - PHASE1["val_accuracy"]) | set(
        PHASE1["val_loss"] - PHASE1["loss"]
    )
    assert [n for n in numbers_in(text) if not traceable(n, allowed)] == []


def test_missing_run_files_are_clear_errors(cfg, tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no training run of experiment 'demo'.*train-phase1"
    ):
        write_day_checkpoint(cfg)
    with pytest.raises(FileNotFoundError, match="run directory .*nowhere does not exist"):
        write_training_report(tmp_path / "nowhere", tmp_path)
    cfg.report.journal = str(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="report.journal=.*missing.yaml does not exist"):
        write_day_checkpoint(cfg)
