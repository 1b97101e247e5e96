"""The day-checkpoint report puts image-only, fusion and ROI runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from transferlab.experiments.stats import format_interval, wilson_interval
from transferlab.reports.checkpoint import write_day_checkpoint


def fake_run(runs: Path, stamp: str, stage: str, mode: str, val_accuracy: float) -> Path:
    """A run directory of experiment demo: config.json, then summary and metrics files."""
    run = runs / f"{stamp}_demo_{stage}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {"inputs": mode}}))
    if stage == "evaluate":
        metrics = {"accuracy": val_accuracy, "split": "test", "inputs": mode, "num_samples": 100}
        (run / "metrics.json").write_text(json.dumps(metrics))
        return run
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [0.9, 0.5],
            "accuracy": [0.5, 0.8],
            "macro_f1": [0.5, 0.8],
            "val_loss": [0.8, 0.6],
            "val_accuracy": [val_accuracy - 0.1, val_accuracy],
            "val_macro_f1": [val_accuracy - 0.1, val_accuracy - 0.01],
            "learning_rate": [0.01, 0.01],
            "epoch_time": [1.0, 1.0],
        }
    )
    history.to_csv(run / "metrics.csv", index=False)
    side = {"image": [], "fusion": ["metadata"], "roi": ["boxes", "box_mask"]}[mode]
    summary = {
        "phase": stage,
        "best_epoch": 2,
        "epochs_run": 2,
        "best_metrics": history.iloc[1].to_dict(),
        "inputs": mode,
        "side_inputs": side,
        "model_path": f"models/demo_{mode}_{stage}_best.keras",
        "val_size": 100,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_compares_input_modes(cfg):
    runs = Path(cfg.output_dir) / "runs"
    fake_run(runs, "20260301-100000", "phase1", "image", 0.55)
    fake_run(runs, "20260301-101000", "evaluate", "image", 0.52)
    fake_run(runs, "20260301-102000", "phase1", "fusion", 0.97)
    fake_run(runs, "20260301-103000", "evaluate", "fusion", 0.95)
    fake_run(runs, "20260301-104000", "phase1", "roi", 0.91)
    cfg.model.inputs = "image"
    text = write_day_checkpoint(cfg).read_text()
    section = text.split("## Input modes compared")[1].split("\n## ")[0]
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if "|" in line}
    header = [c.strip() for c in lines[""].split("|")[2:-1]]
    assert header == ["image", "fusion", "roi"]
    # Each accuracy with its Wilson interval on the 100 validation images.
    assert [c.strip() for c in lines["Best val accuracy (phase1)"].split("|")[2:-1]] == [
        format_interval(value, *wilson_interval(round(value * 100), 100))
        for value in (0.55, 0.97, 0.91)
    ]
    assert "0.9500 [" in lines["Accuracy (test, evaluate)"]
    assert "metadata" in lines["Inputs besides the image"]
    # The rest of the report follows the config's own mode: image-only's run.
    assert "0.5500" in text.split("## Key results")[1].split("\n## ")[0]


def test_one_mode_has_no_comparison(cfg):
    fake_run(Path(cfg.output_dir) / "runs", "20260301-100000", "phase1", "image", 0.55)
    assert "Input modes compared" not in write_day_checkpoint(cfg).read_text()
