"""Reports built from run files: diagnostic rules, training reports, day checkpoints."""

from transferlab.reports.checkpoint import write_day_checkpoint
from transferlab.reports.training import write_training_report

__all__ = ["write_day_checkpoint", "write_training_report"]
