"""Training: ``train_phase(cfg, "phase1" | "phase2") -> RunResult``."""

from transferlab.training.phase import RunResult, TrainingError, train_phase

__all__ = ["RunResult", "TrainingError", "train_phase"]
