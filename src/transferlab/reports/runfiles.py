"""Reading a run directory back: the files a report is built from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.runs import read_json

PHASES = ("phase1", "phase2")


@dataclass
class RunFiles:
    """What a training, evaluate or gradcam run directory holds."""

    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None
    # A training run's per-image validation predictions (val_predictions.csv).
    val_predictions: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def date(self) -> str | None:
        """YYYY-MM-DD from the run id's timestamp (``20260301-101500_<experiment>_<stage>``)."""
        match = re.match(r"(\d{4})(\d{2})(\d{2})-\d{6}", self.path.name)
        return "-".join(match.groups()) if match else None


def read_run(path: str | Path) -> RunFiles:
    """Read a run directory's files where present; list its figures/*.png.

    summary.json, config.json, metrics.csv (the history), metrics.json, predictions.csv,
    val_predictions.csv.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; run its stage first")
    run = RunFiles(path)
    if (path / "summary.json").is_file():
        run.summary = read_json(path / "summary.json")
    if (path / "config.json").is_file():
        run.config = read_json(path / "config.json")
    if (path / "metrics.csv").is_file():
        run.history = pd.read_csv(path / "metrics.csv").sort_values("epoch").reset_index(drop=True)
    if (path / "metrics.json").is_file():
        run.metrics = read_json(path / "metrics.json")
    if (path / "predictions.csv").is_file():
        # Class names stay names: the digits' "0" to "9" are not numbers.
        names = {c: str for c in ("sample_id", "true_class", "predicted_class")}
        run.predictions = pd.read_csv(path / "predictions.csv", dtype=names)
    if (path / "val_predictions.csv").is_file():
        run.val_predictions = pd.read_csv(path / "val_predictions.csv", dtype={"sample_id": str})
    run.figures = sorted((path / "figures").glob("*.png"))
    if not (run.summary or run.metrics or run.history is not None):
        raise FileNotFoundError(
            f"{path} holds no summary.json, metrics.csv or metrics.json; is it a run directory?"
        )
    return run


def earlier_run(path: Path, experiment: str, stage: str) -> Path | None:
    """The newest ``stage`` run of ``experiment`` begun before the run at ``path``.

    For a phase 2 run, the phase 1 run whose best model it was fine-tuned from.
    """
    found = sorted(p for p in path.parent.glob(f"*_{experiment}_{stage}") if p.is_dir())
    earlier = [p for p in found if p.name < path.name]
    return earlier[-1] if earlier else None
