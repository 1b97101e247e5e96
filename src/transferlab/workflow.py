"""Stage functions that make, the notebooks and the demo call with a resolved Config."""

from __future__ import annotations

from transferlab.config import Config
from transferlab.data import load_dataset
from transferlab.splits import prepare_splits


def prepare_data(cfg: Config) -> str:
    """Load the dataset, make (or reuse) its splits and audit them."""
    dataset = load_dataset(cfg)
    splits = prepare_splits(cfg, dataset)
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "test"))
    return f"{dataset.name}: {dataset.num_classes} classes; {sizes}; splits in {splits.directory}"


def train_phase1(cfg: Config) -> str:
    """Phase 1: train the head on the frozen backbone (resumes an interrupted run)."""
    from transferlab.training import train_phase

    return str(train_phase(cfg, "phase1"))


def train_phase2(cfg: Config) -> str:
    """Phase 2: fine-tune from phase2.unfreeze_from, starting from phase 1's best model."""
    from transferlab.training import train_phase

    return str(train_phase(cfg, "phase2"))


def evaluate(cfg: Config) -> str:
    """Evaluate the newest best model on ``eval.split`` (a ``*_evaluate`` run dir)."""
    from transferlab.evaluation import evaluate as evaluate_model

    return str(evaluate_model(cfg))


def gradcam(cfg: Config) -> str:
    """Grad-CAM grids for the newest best model (a ``*_gradcam`` run dir)."""
    from transferlab.gradcam import run_gradcam

    return str(run_gradcam(cfg))


def report(cfg: Config) -> str:
    """The day-checkpoint report, and a training report per phase, from the run files."""
    from transferlab.reports.checkpoint import write_day_checkpoint

    return f"report written to {write_day_checkpoint(cfg)}"
