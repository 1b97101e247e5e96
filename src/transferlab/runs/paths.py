"""Where things live: run directories, best models, checkpoints and splits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


def best_model_path(cfg, phase: str) -> Path:
    """``models/<experiment>_<phase>_best.keras`` (fusion and ROI models add their mode)."""
    return Path(cfg.models_dir) / f"{cfg.model_name}_{phase}_best.keras"


def new_run_dir(output_dir: str | Path, experiment: str, stage: str) -> Path:
    """Create ``outputs/runs/<timestamp>_<experiment>_<stage>/``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(output_dir) / "runs" / f"{stamp}_{experiment}_{stage}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(output_dir) / "runs" / f"{stamp}-{suffix}_{experiment}_{stage}"
    (run_dir / "figures").mkdir(parents=True)
    return run_dir


def find_runs(output_dir: str | Path, experiment: str, stage: str) -> list[Path]:
    """Run directories of one experiment and stage, oldest first."""
    runs = Path(output_dir) / "runs"
    return sorted(p for p in runs.glob(f"*_{experiment}_{stage}") if p.is_dir())


def latest_run(output_dir: str | Path, experiment: str, stage: str) -> Path:
    runs = find_runs(output_dir, experiment, stage)
    if not runs:
        raise FileNotFoundError(
            f"no {stage} run of experiment {experiment!r} under {Path(output_dir) / 'runs'}; "
            f"run `make {stage.replace('phase', 'train-phase')}` with the same CONFIG first"
        )
    return runs[-1]


def splits_dir(cfg) -> Path:
    """``outputs/splits/<dataset>/``: the splits, their audit and the folder scan."""
    return Path(cfg.output_dir) / "splits" / cfg.dataset_name


@dataclass
class PhasePaths:
    """Where one phase of one experiment keeps its models and resumable state."""

    # The phase's best model, where evaluation and the next phase read it.
    best: Path
    # The checkpoint folder: <phase>_state.json names the checkpoints in it.
    folder: Path
    state: Path
    # Held while the phase runs, so a second run of it stops at once.
    lock: Path

    @classmethod
    def of(cls, cfg, phase: str) -> PhasePaths:
        folder = Path(cfg.checkpoints_dir) / cfg.model_name
        return cls(
            best=best_model_path(cfg, phase),
            folder=folder,
            state=folder / f"{phase}_state.json",
            lock=folder / f"{phase}.lock",
        )
