"""The JAX backend against TensorFlow at the same settings, epoch by epoch.

    .venv/bin/python -m transferlab.benchmarks.backends --config configs/demo.yaml

Per seed, both backends train phase 1 from one backbone weights file (a random-init
backbone draws other numbers under each backend, so the file is written once and set as
``model.weights``; the head and dropout still draw from each backend's own generator),
then phase 2 from one phase 1 model (TensorFlow's), so phase 2's comparison does not
carry phase 1's difference. A phase's result is its validation accuracy at its best epoch
(by ``train.monitor``). One run per backend differs by the chance of its draws, so the
comparison is of means over ``--seeds`` seeds. Each phase runs in its own process (a
process has one Keras backend), under ``<output_dir>/backends/``: every run's row in
``backends.csv``, the means in ``backends_summary.csv``, and a verdict in the terminal.
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
    """``cfg`` under ``work/seed<seed>``, as experiment ``backends_<backend>``, from ``weights``."""
    run = copy.deepcopy(cfg)
    run.experiment = f"backends_{backend}"
    # A folder per seed: the seed also draws the splits, which a dataset's folder keeps.
    seed_dir = work / f"seed{cfg.seed}"
    run.output_dir = str(seed_dir / "outputs")
    run.models_dir = str(seed_dir / "models")
    run.checkpoints_dir = str(seed_dir / "checkpoints")
    run.model.weights = str(weights)
    return run


def write_start_weights(cfg: Config, path: Path) -> Path:
    """The backbone's weights as ``cfg`` builds them (random when model.weights is none)."""
    import keras

    from transferlab.models.backbones import build_backbone

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(cfg.seed)
        backbone = build_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.image_size)
        backbone.save_weights(path)
    return path


def train(run: Config, phase: str, backend: str) -> pd.DataFrame:
    """One phase of ``run`` in a fresh process under ``backend``; its metrics rows."""
    config = Path(run.output_dir).parent / f"{run.experiment}.json"  # JSON is YAML too
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


def best_accuracy(rows: pd.DataFrame, monitor: str) -> float:
    """Validation accuracy at the run's best epoch by ``monitor``: what the phase gives."""
    return float(rows.loc[rows[monitor].idxmax(), "val_accuracy"])


def compare_seed(cfg: Config, work: Path) -> list[dict]:
    """Phase 1 from the same backbone weights and phase 2 from the same phase 1 model
    (TensorFlow's), under each backend, for ``cfg.seed``: one row per phase and backend."""
    weights = write_start_weights(cfg, work / f"seed{cfg.seed}" / "backbone.weights.h5")
    runs = {b: backend_config(cfg, work, b, weights) for b in BACKENDS}
    results = []
    for phase in ("phase1", "phase2"):
        if phase == "phase2":
            share_phase1(runs["tensorflow"], runs["jax"])
        for backend in BACKENDS:
            rows = train(runs[backend], phase, backend)
            results.append(
                {
                    "seed": cfg.seed,
                    "phase": phase,
                    "backend": backend,
                    "epochs": len(rows),
                    "best_val_accuracy": best_accuracy(rows, cfg.train.monitor),
                    "val_accuracy_by_epoch": ";".join(f"{v:.4f}" for v in rows["val_accuracy"]),
                }
            )
    return results


def compare_backends(cfg: Config, work: Path, seeds: list[int]) -> pd.DataFrame:
    """Every seed's runs under both backends; written to ``backends.csv`` as they finish."""
    results = []
    for seed in seeds:
        seeded = copy.deepcopy(cfg)
        seeded.seed = seed
        results += compare_seed(seeded, work)
        pd.DataFrame(results).to_csv(work / "backends.csv", index=False)
    return pd.DataFrame(results)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per phase: each backend's mean and spread of the best val accuracy over seeds, and
    the difference of the means (JAX minus TensorFlow)."""
    table = results.pivot_table(
        index="phase", columns="backend", values="best_val_accuracy", aggfunc=["mean", "std"]
    )
    summary = pd.DataFrame(
        {
            "seeds": results.groupby("phase")["seed"].nunique(),
            "tensorflow_mean": table[("mean", "tensorflow")],
            "jax_mean": table[("mean", "jax")],
            "tensorflow_sd": table[("std", "tensorflow")],
            "jax_sd": table[("std", "jax")],
        }
    )
    summary["difference"] = summary["jax_mean"] - summary["tensorflow_mean"]
    summary["goal_met"] = summary["difference"].abs() <= GOAL
    return summary.reset_index()


def verdict(summary: pd.DataFrame) -> str:
    lines = []
    for row in summary.itertuples():
        met = "met" if row.goal_met else "NOT met"
        lines.append(
            f"{row.phase}: best val accuracy over {row.seeds} seed(s): TensorFlow "
            f"{row.tensorflow_mean:.4f}, JAX {row.jax_mean:.4f}; difference "
            f"{row.difference:+.4f} (goal within {GOAL}: {met})"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", default="", help="overrides: 'phase1.epochs=3 seed=1'")
    parser.add_argument("--seeds", type=int, default=3, help="seeds: the config's and the next")
    args = parser.parse_args(argv)
    from transferlab.config.loading import parse_overrides

    cfg = load_config(args.config, parse_overrides(args.set))
    work = Path(cfg.output_dir) / "backends"
    if work.exists():
        shutil.rmtree(work)  # both backends from the same start, never a resumed half
    results = compare_backends(cfg, work, [cfg.seed + i for i in range(args.seeds)])
    summary = summarize(results)
    summary.to_csv(work / "backends_summary.csv", index=False)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(verdict(summary))


if __name__ == "__main__":
    main()
