"""Report rules: the shared seed histories keep their verdicts; every rule on synthetic
histories that must fire and on borderline ones that must not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transferlab.experiments.paired import compare_predictions
from transferlab.reports.rules import (
    RunInfo,
    check_class_balance,
    check_collapse,
    check_leakage,
    check_skipped,
    check_validation_size,
    diagnose,
    gap_to_target,
)

from .conftest import FIXTURES

SEEDS = FIXTURES / "seed_histories"


def seed_history(name: str) -> pd.DataFrame:
    path = SEEDS / name
    if not path.is_file():
        pytest.skip(f"seed history {path} is absent (expected ../shared/fixtures beside the repo)")
    return pd.read_csv(path)


def history(val_accuracy, accuracy=None, loss=None, val_loss=None) -> pd.DataFrame:
    """A metrics.csv history; training accuracy defaults to the validation accuracy."""
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


def finding(diagnosis, rule: str):
    return next(f for f in diagnosis.findings if f.rule == rule)


# --- the shared seed histories ---------------------------------------------------------


def test_drowsiness_is_severe_overfitting():
    d = diagnose(seed_history("drowsiness_resnet50.csv"), RunInfo(num_classes=2))
    assert d.verdict == "overfitting"
    overfit = finding(d, "overfitting")
    assert overfit.severity == "critical"
    assert "0.9603 vs validation 0.4790 at epoch 3" in overfit.message
    assert "every epoch" in overfit.message  # val loss 0.83 -> 1.21 -> 1.42
    assert "best_epoch_early" in d.rules and "too_early" not in d.rules
    assert {"not_converged", "diverging", "underfitting"}.isdisjoint(d.rules)


def test_fused_image_meta_repeats_validation_metrics():
    d = diagnose(seed_history("fused_image_meta_resnet50.csv"), RunInfo(num_classes=2))
    assert d.verdict == "repeated validation metrics"
    repeated = finding(d, "repeated_validation")
    assert repeated.evidence["count"] == 14
    assert repeated.evidence["values"] == [0.959, 0.86, 0.949, 0.902]
    assert "too small" in repeated.message
    assert "overfitting" not in d.rules  # no severe accuracy gap...
    rising = finding(d, "val_loss_rising")
    assert "from 0.1306 (epoch 3) to 0.2196 (epoch 30)" in rising.message  # ...but val loss drifts
    assert {"not_converged", "diverging", "underfitting"}.isdisjoint(d.rules)


def test_dandelion_is_too_early():
    d = diagnose(seed_history("dandelion_grass_resnet18.csv"), RunInfo(num_classes=2))
    assert d.verdict == "too early to judge"
    assert d.rules == ["too_early"]
    assert "still improving" in d.findings[0].message


# --- not converged -----------------------------------------------------------------------

RISING = [0.3, 0.45, 0.55, 0.62, 0.67, 0.70, 0.72, 0.735]


def test_rising_to_the_last_epoch_is_not_converged():
    # Every epoch better than the last: the commonest state of a short run.
    info = RunInfo(num_classes=10, phase="phase2", epochs=8, stop_reason="completed")
    d = diagnose(history(RISING, accuracy=[v + 0.03 for v in RISING]), info)
    assert d.verdict == "not converged" and d.headline.rule == "not_converged"
    assert "best val_accuracy 0.7350 at epoch 8 of 8" in d.headline.message
    assert d.headline.action == "train longer: raise phase2.epochs (e.g. to 16)"
    # A 3-epoch phase 2 still climbing (the report fixture's) says the same.
    short = diagnose(history([0.662, 0.689, 0.701]), RunInfo(phase="phase2", epochs=3))
    assert short.verdict == "not converged"
    assert short.headline.action == "train longer: raise phase2.epochs (e.g. to 6)"


def test_not_converged_within_a_patience_and_unfinished_runs():
    # Best two epochs before the end, well above everything before: still improving.
    d = diagnose(history([0.4, 0.5, 0.6, 0.66, 0.7, 0.76, 0.8, 0.79, 0.795]), RunInfo())
    assert d.verdict == "not converged"
    assert "at epoch 7 of 9" in d.headline.message
    # An interrupted run is told to finish its planned epochs, not to plan more.
    info = RunInfo(phase="phase1", epochs=10, stop_reason="interrupted")
    d = diagnose(history([0.3, 0.4, 0.5, 0.6]), info)
    assert d.headline.action.startswith("let it run its planned 10 epochs")


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 0.7, 0.78, 0.80, 0.79, 0.805, 0.798, 0.806],  # noise around a plateau
        [0.5, 0.7, 0.80, 0.77, 0.82, 0.78, 0.80, 0.83],  # louder noise, small val set
        [0.6, 0.7, 0.75, 0.78, 0.8, 0.9, 0.901, 0.902, 0.903, 0.904, 0.905],  # levelling off
        [0.5, 0.7, 0.8, 0.85, 0.86, 0.862, 0.861, 0.86, 0.859],  # climbed, then flat
        [0.70, 0.703, 0.701],  # three flat epochs
    ],
)
def test_a_plateau_is_not_still_improving(values):
    assert "not_converged" not in diagnose(history(values), RunInfo(num_classes=10)).rules


def test_early_stopping_means_converged():
    d = diagnose(history(RISING), RunInfo(stop_reason="early_stopping", patience=3))
    assert "not_converged" not in d.rules


# --- diverging ---------------------------------------------------------------------------

DIVERGED = history(
    [0.45, 0.62, 0.68, 0.3, 0.1, 0.1, 0.1, 0.1],
    accuracy=[0.4, 0.6, 0.7, 0.35, 0.1, 0.1, 0.1, 0.1],
    loss=[1.8, 1.2, 0.9, 2.5, 6.0, 13.5, 13.5, 13.5],
    val_loss=[1.7, 1.1, 0.95, 3.0, 7.0, 14.0, 14.0, 14.0],
)


def test_loss_growing_fifteenfold_is_diverging():
    info = RunInfo(num_classes=10, phase="phase2", learning_rate=0.001)
    d = diagnose(DIVERGED, info)
    assert d.verdict == "diverging"
    message = d.headline.message
    assert "training loss rose from 0.9000 (epoch 3) to 13.5000 (epoch 8)" in message
    assert "training accuracy fell from 0.7000 (epoch 3) to 0.1000 (epoch 8)" in message
    assert "phase2.learning_rate, now 0.0010" in d.headline.action
    assert "clip" in d.headline.action
    # The repeats come from a model predicting one class, not from a small val set.
    assert {"repeated_validation", "underfitting", "stalled"}.isdisjoint(d.rules)
    # Without the class count the loss alone tells it.
    assert diagnose(DIVERGED).verdict == "diverging"


def test_nan_loss_is_diverging():
    nan = history([0.5, 0.6, 0.6], loss=[1.0, 0.8, float("nan")], val_loss=[1.0, 0.9, np.nan])
    d = diagnose(nan, RunInfo(num_classes=3))
    assert d.verdict == "diverging" and "NaN or infinite at epoch 3" in d.headline.message
    stopped = diagnose(history([0.5, 0.6, 0.62]), RunInfo(stop_reason="nan_loss"))
    assert stopped.verdict == "diverging" and "after epoch 3" in stopped.headline.message


@pytest.mark.parametrize(
    "kwargs",
    [
        # a warm-up bump in the training loss that comes back down
        {"loss": [1.0, 0.6, 0.8, 0.5, 0.4, 0.35, 0.34, 0.34]},
        # a near-zero loss jittering by a large factor
        {"loss": [0.5, 0.1, 0.02, 0.005, 0.003, 0.002, 0.002, 0.006]},
        # an accuracy dip that recovers
        {"accuracy": [0.5, 0.7, 0.8, 0.4, 0.75, 0.8, 0.82, 0.84]},
    ],
)
def test_bumps_are_not_divergence(kwargs):
    values = [0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.8, 0.8]
    assert "diverging" not in diagnose(history(values, **kwargs), RunInfo(num_classes=10)).rules


# --- underfitting ------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, 2, 3])
def test_stuck_at_055_is_underfitting(num_classes):
    rng = np.random.default_rng(0)
    noise = list(0.55 + rng.uniform(-0.005, 0.005, 20)) if num_classes == 2 else [0.55] * 20
    stuck = history(noise, accuracy=[0.55] * 20, loss=[0.69] * 20, val_loss=[0.69] * 20)
    info = RunInfo(
        num_classes=num_classes, phase="phase2", unfreeze_from="conv5", learning_rate=1e-4
    )
    d = diagnose(stuck, info)
    assert d.verdict == "underfitting"
    assert "at most 0.5500 from epoch 11 to 20" in d.headline.message
    for step in ("unfreeze more stages (phase2.unfreeze_from, now conv5)", "image_size", "longer"):
        assert step in d.headline.action
    assert "stalled" not in d.rules and "best_epoch_early" not in d.rules


def test_phase1_underfitting_suggests_fine_tuning():
    stuck = history([0.5] * 8, accuracy=[0.52] * 8)
    d = diagnose(stuck, RunInfo(num_classes=4, phase="phase1", image_size=96))
    assert d.verdict == "underfitting"
    assert "fine-tune the backbone" in d.headline.action
    assert "model.image_size, now 96" in d.headline.action


@pytest.mark.parametrize(
    "values, accuracy",
    [
        ([0.098, 0.101, 0.103, 0.099] * 3, None),  # at chance: a broken pipeline instead
        ([0.7, 0.8, 0.85, 0.86, 0.86, 0.86, 0.86, 0.86], [0.4, 0.45, 0.48, 0.5] + [0.5] * 4),
        ([0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55], None),  # low but climbing
        ([0.9] * 10, [0.91] * 10),  # flat but high
    ],
)
def test_underfitting_must_not_fire(values, accuracy):
    d = diagnose(history(values, accuracy=accuracy), RunInfo(num_classes=10))
    assert "underfitting" not in d.rules


def test_chance_level_names_the_usual_causes():
    # The CIFAR-10 report: frozen ResNet50 at 10.3% after 12 epochs.
    d = diagnose(history([0.098, 0.101, 0.103, 0.099] * 3), RunInfo(num_classes=10))
    assert d.verdict == "chance-level accuracy"
    first = d.findings[0]
    assert first.severity == "critical" and "0.1030" in first.message
    for cause in ("preprocess", "BatchNorm", "labels"):
        assert cause in first.action
    assert diagnose(history([0.5, 0.7, 0.8]), RunInfo(num_classes=10)).verdict != (
        "chance-level accuracy"
    )


# --- validation above training, fine-tuning, the rest ------------------------------------


def test_validation_above_training_is_a_note_not_a_problem():
    val = [0.6, 0.7, 0.75, 0.78, 0.8, 0.81, 0.805, 0.808]
    train = [0.5, 0.6, 0.66, 0.7, 0.72, 0.73, 0.73, 0.735]
    d = diagnose(history(val, accuracy=train), RunInfo(stop_reason="early_stopping"))
    note = finding(d, "val_above_train")
    assert note.severity == "info" and "8 of 8 epochs" in note.message
    assert d.verdict == "no problems found"
    # Train and validation taking turns is not "consistently above".
    turns = diagnose(
        history(val, accuracy=[v + (0.01 if i % 2 else -0.01) for i, v in enumerate(val)])
    )
    assert "val_above_train" not in turns.rules


def phase_test(phase1_right: int, phase2_right: int, images: int, shift: int = 0) -> dict:
    """Paired test: phase 1 right on the first images, phase 2 on as many from ``shift``."""
    y = np.arange(images) % 3
    probs = {}
    for name, start, right in (("phase 1", 0, phase1_right), ("phase 2", shift, phase2_right)):
        index = np.arange(images)
        predicted = np.where((index >= start) & (index < start + right), y, (y + 1) % 3)
        probs[name] = np.eye(3)[predicted]
    return compare_predictions(y, probs["phase 1"], probs["phase 2"], names=("phase 1", "phase 2"))


def test_fine_tuning_hurt():
    phase2 = history([0.70, 0.74, 0.75, 0.745, 0.748, 0.744])
    info = RunInfo(
        phase="phase2",
        phase1_best=0.8,
        stop_reason="early_stopping",
        learning_rate=0.001,
        unfreeze_from="conv4",
        kept_phase1=True,
        # The same 1,000 validation images: phase 1 right on 800, phase 2 on 750 of them.
        phase1_test=phase_test(800, 750, 1000),
    )
    d = diagnose(phase2, info)
    assert d.verdict == "fine-tuning hurt"
    assert "phase 2's best val_accuracy 0.7500 is below phase 1's 0.8000 (-0.0500)" in (
        d.headline.message
    )
    assert "phase 1 is better than phase 2 in accuracy by 5.0 points [" in d.headline.message
    assert "phase 1's model stays the experiment's best" in d.headline.message
    assert "phase2.learning_rate, now 0.0010" in d.headline.action
    assert "now conv4" in d.headline.action
    better = RunInfo(phase="phase2", phase1_best=0.74, stop_reason="early_stopping")
    assert "fine_tuning_hurt" not in diagnose(phase2, better).rules
    # Phase 1's own history is never measured against itself.
    assert (
        "fine_tuning_hurt" not in diagnose(phase2, RunInfo(phase="phase1", phase1_best=0.8)).rules
    )


def test_a_drop_the_paired_test_cannot_detect_is_no_verdict():
    # 2.6 points on 270 validation images (as make demo once reported as "fine-tuning hurt").
    phase2 = history([0.70, 0.74, 0.7474, 0.745, 0.746, 0.744])
    info = RunInfo(
        phase="phase2",
        phase1_best=0.7733,
        stop_reason="early_stopping",
        # They disagree on 33 images: 20 only phase 1 got right, 13 only phase 2.
        phase1_test=phase_test(209, 202, 270, shift=20),
    )
    d = diagnose(phase2, info)
    assert d.verdict != "fine-tuning hurt" and "fine_tuning_hurt" not in d.rules
    note = finding(d, "fine_tuning_no_change")
    assert note.severity == "info"
    assert "no difference in accuracy detectable on 270 images (p = " in note.message
    assert "would be needed to detect 2.6 points" in note.message
    # No per-image predictions: the drop is shown as untested, not as a verdict.
    untested = diagnose(phase2, RunInfo(phase="phase2", phase1_best=0.7733))
    assert "fine_tuning_hurt" not in untested.rules
    assert "untested (no per-image validation predictions)" in (
        finding(untested, "fine_tuning_untested").message
    )


def test_converged_run_has_no_problems():
    converged = history([0.5, 0.7, 0.8, 0.85, 0.86, 0.862, 0.861, 0.86, 0.859])
    d = diagnose(converged, RunInfo(num_classes=3, stop_reason="early_stopping", patience=3))
    assert d.verdict == "no problems found" and d.findings == [] and d.headline is None


def test_stalled_and_oscillating():
    stalled = diagnose(
        history([0.5, 0.7, 0.8, 0.795, 0.8, 0.799, 0.797, 0.8]), RunInfo(num_classes=3)
    )
    assert "stalled" in stalled.rules
    osc = diagnose(history([0.3, 0.5, 0.32, 0.48, 0.31, 0.5, 0.35, 0.49]), RunInfo(num_classes=10))
    assert osc.verdict == "oscillating validation"
    assert "between 0.3000 and 0.5000" in finding(osc, "oscillating").message
    # A steep first climb, then small wiggles near the top: converging, not oscillating.
    climbing = diagnose(history([0.1, 0.49, 0.66, 0.8, 0.76, 0.8, 0.77]), RunInfo(num_classes=10))
    assert "oscillating" not in climbing.rules


# --- predictions and data ------------------------------------------------------------------


def predictions(true: list[str], predicted: list[str], classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({"true_class": true, "predicted_class": predicted})
    for name in classes:
        table[f"prob_{name}"] = (table["predicted_class"] == name).astype(float)
    return table


def test_collapse_onto_few_classes():
    classes = [f"c{i}" for i in range(10)]
    true = [classes[i % 10] for i in range(100)]
    collapsed = predictions(true, ["c3"] * 60 + ["c7"] * 30 + ["c0"] * 10, classes)
    found = check_collapse(collapsed, "test")
    assert [f.rule for f in found] == ["collapse"]
    assert "onto c3 and c7: 90 of 100 test images" in found[0].message
    assert "while 20 belong to them" in found[0].message
    # Binary: one class predicted for nearly all of a balanced set.
    binary = predictions(["a", "b"] * 50, ["a"] * 95 + ["b"] * 5, ["a", "b"])
    assert check_collapse(binary)[0].evidence["predicted"] == 95
    # Must not fire: a good model on an imbalanced set, or a mild lean.
    assert (
        check_collapse(predictions(["a"] * 85 + ["b"] * 15, ["a"] * 86 + ["b"] * 14, ["a", "b"]))
        == []
    )
    assert check_collapse(predictions(["a", "b"] * 50, ["a"] * 70 + ["b"] * 30, ["a", "b"])) == []


def test_skipped_files_and_small_validation():
    skipped = pd.DataFrame(
        {
            "path": ["a.txt", "b.txt", "c.jpg"],
            "reason": ["not an image file (suffix .txt)"] * 2
            + ["not a readable image (truncated)"],
        }
    )
    found = check_skipped(skipped)
    assert found[0].rule == "skipped_files"
    assert "3 file(s)" in found[0].message
    assert "not an image file (suffix .txt) (2); not a readable image (truncated) (1)" in (
        found[0].message
    )
    assert check_skipped(skipped.head(0)) == []
    assert "45 images" in check_validation_size(45)[0].message
    assert check_validation_size(500) == [] and check_validation_size(None) == []
    d = diagnose(history([0.5, 0.6, 0.7]), RunInfo(val_size=45))
    assert "small_validation" in d.rules


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
