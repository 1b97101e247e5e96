"""The JAX backend against TensorFlow at the same settings, epoch by epoch.

    .venv/bin/python -m transferlab.benchmarks.backends --config configs/demo.yaml

Both backends train phase 1 from one weights file (a random-init backbone draws other
numbers under each backend, so the file is written once and set as ``model.weights``),
then phase 2 from one phase 1 model (TensorFlow's), so phase 2's comparison does not
carry phase 1's difference. Each phase runs in its own process (a process has one Keras
backend), under ``<output_dir>/backends/``. The table (phase, epoch, validation accuracy
under each backend, difference) goes to ``backends.csv`` there and to the terminal.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from transferlab.config import Config, load_config
from transferlab.runs import PhasePaths, latest_run, read_metrics

BACKENDS = ("tensorflow", "jax")
# The goal: validation accuracy within this of TensorFlow's, per phase.
GOAL = 0.03


def backend_config(cfg: Config, work: Path, backend: str, weights: Path) -> Config:
    """``cfg`` under ``work``, as experiment ``backends_<backend>``, from ``weights``."""
    run = copy.deepcopy(cfg)
    run.experiment = f"backends_{backend}"
    run.output_dir = str(work / "outputs")
    run.models_dir = str(work / "models")
    run.checkpoints_dir = str(work / "checkpoints")
    run.model.weights = str(weights)
    return run


def write_start_weights(cfg: Config, path: Path) -> Path:
    """The backbone's weights as ``cfg`` builds them (random when model.weights is none)."""
    from transferlab.models.backbones import build_backbone

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        backbone = build_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.image_size)
        backbone.save_weights(path)
    return path


def train(run: Config, phase: str, backend: str, work: Path) -> pd.DataFrame:
    """One phase of ``run`` in a fresh process under ``backend``; its metrics rows."""
    config = work / f"{run.experiment}.json"  # JSON is YAML too
    run.save(config)
    env = {**os.environ, "KERAS_BACKEND": backend}
    stage = "train-phase1" if phase == "phase1" else "train-phase2"
    command = [sys.executable, "-m", "transferlab", stage, "--config", str(config)]
    subprocess.run(command, env=env, check=True)
    run_dir = latest_run(run.output_dir, run.experiment, phase)
    return pd.DataFrame(read_metrics(run_dir / "metrics.csv"))


def share_phase1(source: Config, target: Config) -> None:
    """Give ``target`` ``source``'s phase 1 (best model and state): phase 2's start."""
    here, there = PhasePaths.of(source, "phase1"), PhasePaths.of(target, "phase1")
    there.folder.mkdir(parents=True, exist_ok=True)
    there.best.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(here.best, there.best)
    shutil.copy2(here.state, there.state)


def side_by_side(rows: dict[str, pd.DataFrame], phase: str) -> pd.DataFrame:
    """Validation accuracy per epoch under each backend, and JAX minus TensorFlow."""
    columns = {b: rows[b].set_index("epoch")["val_accuracy"] for b in BACKENDS}
    table = pd.DataFrame(columns).dropna().reset_index()
    table.insert(0, "phase", phase)
    table["difference"] = table["jax"] - table["tensorflow"]
    return table


def compare_backends(cfg: Config, work: Path) -> pd.DataFrame:
    """Phase 1 from the same weights and phase 2 from the same phase 1, per backend."""
    weights = write_start_weights(cfg, work / f"{cfg.model.backbone}_start.weights.h5")
    runs = {b: backend_config(cfg, work, b, weights) for b in BACKENDS}
    phase1 = {b: train(runs[b], "phase1", b, work) for b in BACKENDS}
    share_phase1(runs["tensorflow"], runs["jax"])  # JAX's phase 2 starts from TF's phase 1
    phase2 = {b: train(runs[b], "phase2", b, work) for b in BACKENDS}
    table = pd.concat([side_by_side(phase1, "phase1"), side_by_side(phase2, "phase2")])
    table.to_csv(work / "backends.csv", index=False)
    return table


def verdict(table: pd.DataFrame) -> str:
    """Per phase: the largest per-epoch gap and the last epoch's, against the goal."""
    lines = []
    for phase, part in table.groupby("phase"):
        widest = part["difference"].abs().max()
        last = part.iloc[-1]
        met = "met" if widest <= GOAL else "NOT met"
        lines.append(
            f"{phase}: {len(part)} epochs; last epoch val accuracy TensorFlow "
            f"{last['tensorflow']:.4f}, JAX {last['jax']:.4f}; widest gap {widest:.4f} "
            f"(goal at most {GOAL}: {met})"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", default="", help="overrides: 'phase1.epochs=3 seed=1'")
    args = parser.parse_args(argv)
    from transferlab.config.loading import parse_overrides

    cfg = load_config(args.config, parse_overrides(args.set))
    work = Path(cfg.output_dir) / "backends"
    if work.exists():
        shutil.rmtree(work)  # both backends from the same start, never a resumed half
    table = compare_backends(cfg, work)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(verdict(table))


if __name__ == "__main__":
    main()
