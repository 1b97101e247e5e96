"""Training reports and day checkpoints built from hand-written run files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.proportion import proportion_confint

from transferlab.experiments.stats import format_interval, metric_intervals
from transferlab.reports.checkpoint import write_day_checkpoint
from transferlab.reports.training import write_training_report

from .conftest import write_image

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
        "train_size": 160,
        "val_size": 45,
        "feature_cached": phase == "phase1",
    }


def write_png(path: Path) -> Path:
    return write_image(path, np.full((10, 10, 3), 128, dtype=np.uint8))


def write_predictions(path: Path) -> Path:
    """73 test images: cat 15/23, dog 14/24 (6 taken for cats), owl 22/26 right."""
    rows = []
    for true, right, wrong in (
        ("cat", 15, ["owl"] * 8),
        ("dog", 14, ["cat"] * 6 + ["owl"] * 4),
        ("owl", 22, ["dog"] * 4),
    ):
        rows += [(true, true)] * right + [(true, w) for w in wrong]
    names = ["cat", "dog", "owl"]
    table = pd.DataFrame(rows, columns=["true_class", "predicted_class"])
    table.insert(0, "sample_id", [f"img{i}" for i in range(len(table))])
    table["true_label"] = table["true_class"].map(names.index)
    table["predicted_label"] = table["predicted_class"].map(names.index)
    table["confidence"] = 0.9
    table["correct"] = table["true_class"] == table["predicted_class"]
    for name in names:
        table[f"prob_{name}"] = np.where(table["predicted_class"] == name, 0.9, 0.05)
    table.to_csv(path, index=False)
    return path


@pytest.fixture
def run_files(cfg, tmp_path):
    """Phase 1, phase 2, evaluate and Grad-CAM run directories, splits files, a journal,
    and the key results an earlier day's report saved, by hand."""
    runs = Path(cfg.output_dir) / "runs"
    config = cfg.to_dict()
    config["phase1"].update(epochs=20, patience=2)
    config["phase2"].update(epochs=3, patience=2)
    for stamp, phase, hist, best, params in (
        ("20260301-101500", "phase1", PHASE1, 3, (6147, 23587712)),
        ("20260301-111500", "phase2", PHASE2, 3, (14970883, 8622976)),
    ):
        run = runs / f"{stamp}_demo_{phase}"
        run.mkdir(parents=True)
        hist.to_csv(run / "metrics.csv", index=False)
        (run / "summary.json").write_text(json.dumps(summary(phase, hist, best, params)))
        (run / "config.json").write_text(json.dumps(config))
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
    write_predictions(evaluate / "predictions.csv")
    for name in ("confusion_matrix_normalized.png", "roc_curves.png"):
        write_png(evaluate / "figures" / name)
    gradcam = runs / "20260301-131500_demo_gradcam"
    gradcam_summary = {
        "model_path": "models/demo_phase2_best.keras",
        "layer_name": "conv5_block3_out",
        "split": "test",
        "num_images": 73,
        "figures": ["figures/gradcam_correct.png", "figures/gradcam_mistakes.png"],
    }
    (gradcam / "figures").mkdir(parents=True)
    (gradcam / "summary.json").write_text(json.dumps(gradcam_summary))
    for name in ("gradcam_correct.png", "gradcam_mistakes.png"):
        write_png(gradcam / "figures" / name)
    splits = Path(cfg.output_dir) / "splits" / "digits"
    splits.mkdir(parents=True)
    balance = {
        "train": {"cat": 70, "dog": 21, "owl": 69},
        "val": {"cat": 15, "dog": 15, "owl": 15},
        "test": {"cat": 23, "dog": 24, "owl": 26},
    }
    (splits / "balance.json").write_text(json.dumps(balance, sort_keys=True))  # as runs writes
    audit = {"duplicates_across_splits": [], "shared_groups": [], "clean": True}
    (splits / "audit.json").write_text(json.dumps(audit))
    skipped = pd.DataFrame(
        {
            "path": ["/data/cat/notes.txt", "/data/dog/broken.jpg", "/data/dog/x.txt"],
            "reason": [
                "not an image file (suffix .txt; use jpg, jpeg, png or bmp)",
                "not a readable image (truncated file)",
                "not an image file (suffix .txt; use jpg, jpeg, png or bmp)",
            ],
        }
    )
    skipped.to_csv(splits / "skipped.csv", index=False)
    earlier = Path(cfg.report.output_dir) / "sprint02_day03_files" / "key_results.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(
        json.dumps(
            {
                "experiment": "demo",
                "sprint": 2,
                "day": 3,
                "results": {
                    "val_accuracy": {"phase1": 0.5971},
                    "val_macro_f1": {"phase1": 0.5802},
                    "test_accuracy": {"phase1": 0.5812},
                },
            }
        )
    )
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
    files = [*runs.rglob("*.csv"), *runs.rglob("*.json"), *splits.iterdir(), earlier, journal]
    # predictions.csv holds only probabilities and labels the report has no reason to show.
    files = [f for f in files if f.name != "predictions.csv"]
    return {"runs": runs, "files": files, "balance": balance, "skipped": skipped}


NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:e[-+]\d+)?(?![\w.])")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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


def derived_values(run_files) -> set[float]:
    """What a report may compute from file values: differences, sums and counts, each named."""
    values = {0.85 - 0.6933}  # gap to the target
    for hist in (PHASE1, PHASE2):  # per-epoch gaps
        values |= set(hist["accuracy"] - hist["val_accuracy"]) | set(
            hist["val_loss"] - hist["loss"]
        )
    best1, best2 = PHASE1.iloc[2], PHASE2.iloc[2]  # phase 2's change over phase 1
    values |= {best2[k] - best1[k] for k in ("val_accuracy", "val_macro_f1")}
    values |= {best1["val_accuracy"] - 0.5971, best1["val_macro_f1"] - 0.5802}  # since day 3
    values |= {sum(counts.values()) for counts in run_files["balance"].values()}  # split sizes
    values |= {len(run_files["skipped"]), *run_files["skipped"]["reason"].value_counts()}
    values |= {0.701 - 0.662}  # phase 2's climb
    # Wilson intervals: best val accuracy on the 45 validation images, test accuracy on 73.
    for accuracy, images in ((0.644, 45), (0.701, 45), (0.6933, 73)):
        values |= set(proportion_confint(round(accuracy * images), images, method="wilson"))
    values |= {2 * len(PHASE2)}  # "raise phase2.epochs (e.g. to 6)"
    return values


def test_day_checkpoint_holds_its_files_numbers_and_nothing_else(cfg, run_files):
    path = write_day_checkpoint(cfg)
    text = path.read_text()
    assert path.name == "sprint02_day04.md" and path.parent == Path(cfg.report.output_dir)
    assert text.startswith("# transferlab demo — Sprint 2, Day 4 checkpoint")
    assert "**Date:** 2026-03-01" in text  # from the newest run's id, not today's clock

    # Every number is a file value, or a difference, sum or count of file values.
    allowed = file_values(run_files["files"]) | derived_values(run_files)
    shown = numbers_in(DATE.sub("", text))  # dates come from run ids, not measurements
    untraceable = [n for n in shown if not traceable(n, allowed)]
    assert untraceable == [], untraceable

    # ...and the numbers that matter are there.
    for expected in ("0.6440", "0.7010", "0.6933", "23593859", "6147", "23587712", "DEC-004"):
        assert expected in text, expected
    # Each metric with its interval; the change marked untested (no per-image predictions).
    assert "| Test accuracy (test) | — | 0.6933 [0.5856, 0.7918] |  |" in text
    assert (
        "| Best val accuracy | 0.6440 [0.4984, 0.7678] | 0.7010 [0.5663, 0.8227] | "
        "+0.0570 (untested) |" in text
    )
    assert "| Cat |" not in text and "| dog | 0.6087 | 0.5833 | 0.5957 | 24 |" in text
    assert "severe overfitting" in text and "0.1567 below the target 0.8500" in text
    assert "Add flip and 0.1 rotation augmentation" in text  # the journal's priorities
    assert "imbalanced" in text  # 70 cats vs 21 dogs in train
    assert "**Verdict:** phase1: overfitting · phase2: not converged" in text
    # Both phases share one validation set: its finding is listed once.
    assert text.count("the validation split has 45 images") == 1
    assert "phase1 and phase2: the validation split has 45 images" in text

    # Figures are copied beside the report and linked relatively.
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        assert (path.parent / link).is_file(), link
    assert "sprint02_day04_files/evaluate_roc_curves.png" in links
    assert "sprint02_day04_files/training_curves_phases.png" in links

    # Regenerating from the same files gives the same markdown.
    assert write_day_checkpoint(cfg).read_text() == text


def section(text: str, title: str) -> str:
    return text.split(f"## {title}")[1].split("\n## ")[0]


def test_day_checkpoint_tells_the_whole_day_in_order(cfg, run_files):
    text = write_day_checkpoint(cfg).read_text()
    titles = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert titles == [
        "Completed tasks",
        "Data",
        "Key results",
        "Progress since Sprint 2, Day 3",
        "Key outputs",
        "Grad-CAM",
        "Model summary",
        "Per-class results (test split)",
        "Decisions",
        "Observations",
        "Gap analysis",
        "Next priorities",
        "Notes",
    ]
    data = section(text, "Data")
    assert "Dataset `digits`" in data and "3 classes: cat, dog, owl" in data
    assert "| train | 160 | dog (21) | cat (70) |" in data
    assert "| test | 73 | cat (23) | owl (26) |" in data
    assert data.index("| train |") < data.index("| val |") < data.index("| test |")
    assert "**Skipped files:** 3" in data
    assert "| not an image file (suffix .txt; use jpg, jpeg, png or bmp) | 2 |" in data
    assert "**Leakage audit:** clean" in data
    progress = section(text, "Progress since Sprint 2, Day 3")
    assert "| Best val accuracy (phase1) | 0.5971 | 0.6440 | +0.0469 (untested) |" in progress
    assert "| Best val accuracy (phase2) | — | 0.7010 | — |" in progress
    gradcam = section(text, "Grad-CAM")
    assert "Layer `conv5_block3_out`" in gradcam and "(73 images)" in gradcam
    assert "sprint02_day04_files/gradcam_correct.png" in gradcam
    observations = section(text, "Observations")
    assert "data: 3 file(s) were left out of the dataset" in observations
    assert "phase2: still improving: best val_accuracy 0.7010 at epoch 3 of 3" in observations


def test_priorities_come_from_the_verdicts_without_a_journal(cfg, run_files):
    cfg.report.journal = None
    priorities = section(write_day_checkpoint(cfg).read_text(), "Next priorities")
    lines = [line for line in priorities.splitlines() if line.strip()]
    assert lines[0].startswith("1. **overfitting** (phase1): stop at the best epoch")
    assert (
        lines[1] == "2. **not converged** (phase2): train longer: raise phase2.epochs (e.g. to 6)"
    )
    assert len(lines) <= 5


def test_progress_across_two_days(cfg, run_files):
    cfg.report.journal = None
    cfg.report.sprint, cfg.report.day = 3, 1
    write_val_predictions(run_files["runs"] / "20260301-111500_demo_phase2", range(0, 30))
    first = write_day_checkpoint(cfg).read_text()
    assert "## Progress since Sprint 2, Day 3" in first  # the fixture's saved day
    # Val macro-F1 carries the bootstrap interval of the validation predictions.
    frame = pd.read_csv(run_files["runs"] / "20260301-111500_demo_phase2" / "val_predictions.csv")
    interval = metric_intervals(frame["true_label"], frame.filter(like="prob_").to_numpy())
    shown = format_interval(0.0, interval["macro_f1"]["low"], interval["macro_f1"]["high"])
    assert f"| Best val macro-F1 | 0.6370 | 0.6940 {shown.split(' ', 1)[1]} |" in first
    # The next day, with a better phase 2 run: each key result with its change.
    better = PHASE2.assign(val_accuracy=[0.662, 0.689, 0.731])
    run = run_files["runs"] / "20260302-101500_demo_phase2"
    run.mkdir()
    better.to_csv(run / "metrics.csv", index=False)
    (run / "summary.json").write_text(json.dumps(summary("phase2", better, 3, (1, 2))))
    write_val_predictions(run, range(0, 33))  # 3 more of the same 45 images right
    cfg.report.day = 2
    second = write_day_checkpoint(cfg).read_text()
    progress = section(second, "Progress since Sprint 3, Day 1")
    # Both days' phase 2 wrote val_predictions.csv on the same images: tested, paired.
    assert "| Best val accuracy (phase2) | 0.7010 | 0.7310 | +0.0667 [" in progress
    assert (
        "- Best val accuracy (phase2): no difference in accuracy detectable on 45 images "
        "(p = 0.250;" in progress
    )
    assert "| Best val accuracy (phase1) | 0.6440 | 0.6440 | 0.0000 (untested) |" in progress
    # The same evaluate run both days: nothing to test.
    assert "| Test accuracy (phase2) | 0.6933 | 0.6933 | 0.0000 (same run) |" in progress


def write_val_predictions(run: Path, right: range, images: int = 45) -> None:
    """val_predictions.csv as training writes it: right on the images in ``right``."""
    y = np.arange(images) % 3
    predicted = np.where(np.isin(np.arange(images), right), y, (y + 1) % 3)
    table = pd.DataFrame({"sample_id": [f"val{i}" for i in range(images)], "true_label": y})
    table["predicted_label"] = predicted
    table["correct"] = y == predicted
    for i, name in enumerate(["cat", "dog", "owl"]):
        table[f"prob_{name}"] = np.where(predicted == i, 0.8, 0.1)
    table.to_csv(run / "val_predictions.csv", index=False)


def test_a_small_drop_and_collapse_reach_the_checkpoint(cfg, run_files):
    runs = run_files["runs"]
    worse = PHASE2.assign(val_accuracy=[0.58, 0.6, 0.61])
    phase2 = runs / "20260301-111500_demo_phase2"
    worse.to_csv(phase2 / "metrics.csv", index=False)
    s = summary("phase2", worse, 3, (1, 2)) | {"best_epoch": 0, "best_metrics": {}}
    s |= {"kept_phase1": True, "best_model_path": "models/demo_phase1_best.keras"}
    (phase2 / "summary.json").write_text(json.dumps(s))
    # On the same 45 validation images phase 1 got 29 right, phase 2 27: they disagree on
    # 4 (3 only phase 1 got right, 1 only phase 2), far too few to call a difference.
    write_val_predictions(runs / "20260301-101500_demo_phase1", range(0, 29))
    write_val_predictions(phase2, range(3, 30))
    predictions = pd.read_csv(runs / "20260301-121500_demo_evaluate" / "predictions.csv")
    predictions["predicted_class"] = ["owl"] * 70 + ["cat"] * 3
    predictions.to_csv(runs / "20260301-121500_demo_evaluate" / "predictions.csv", index=False)
    text = write_day_checkpoint(cfg).read_text()
    assert "fine-tuning hurt" not in text
    assert (
        "phase2: phase 2's best val_accuracy 0.6100 is below phase 1's 0.6440 (-0.0340), but "
        "the paired test finds no difference in accuracy detectable on 45 images (p = 0.625; "
        "about " in text
    )
    assert "| Best val accuracy | 0.6440 [0.4984, 0.7678] | 0.6100 [" in text  # its own best row
    assert "| -0.0444 [" in text and "], p = 0.625 |" in text  # the paired change
    assert "- Phase 2 − phase 1 (same validation images): no difference in accuracy" in text
    assert "evaluate (test): predictions collapse onto owl: 70 of 73 test images" in text
    # Phase 2 wrote no model of its own: the report names none.
    assert "| Best model (phase2) | none: phase 1's model stays the best |" in text
    assert "| Best model (phase2) | `models/demo_phase2_best.keras` |" not in text


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
    allowed = file_values([run / "metrics.csv", run / "summary.json", run / "config.json"])
    allowed |= set(PHASE1["accuracy"] - PHASE1["val_accuracy"]) | set(
        PHASE1["val_loss"] - PHASE1["loss"]
    )
    assert [n for n in numbers_in(text) if not traceable(n, allowed)] == []


def test_training_report_of_a_short_phase2_still_climbing(cfg, run_files, tmp_path):
    run = run_files["runs"] / "20260301-111500_demo_phase2"
    text = write_training_report(run, tmp_path / "reports").read_text()
    assert (
        "**Verdict: not converged.** Still improving: best val_accuracy 0.7010 at epoch 3 of 3"
        in text
    )
    assert "*Next:* train longer: raise phase2.epochs (e.g. to 6)." in text
    assert "no problems found" not in text


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


def test_the_leakage_audit_is_shown_in_a_line_not_dumped(tmp_path):
    from transferlab.reports.explore import audit_summary

    audit = {"clean": False, "duplicates_across_splits": [{"hash": "a"}], "shared_groups": []}
    (tmp_path / "audit.json").write_text(json.dumps(audit))
    line = audit_summary(tmp_path)
    assert line.startswith("Leakage audit: LEAKS; 1 image(s) byte-identical across splits")
    assert "0 group(s)" in line and str(tmp_path / "audit.json") in line
