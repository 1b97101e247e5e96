"""The run-folder format: the interface between pipeline stages.

Run directories, best-model and checkpoint paths, atomic writes, and the
``metrics.csv`` / ``summary.json`` files every stage reads back.
"""

from transferlab.runs.files import (
    atomic_path,
    read_json,
    remove_temporaries,
    write_json,
    write_text,
    write_with,
)
from transferlab.runs.paths import (
    PhasePaths,
    best_model_path,
    find_runs,
    latest_run,
    new_run_dir,
    splits_dir,
)
from transferlab.runs.records import METRIC_COLUMNS, metrics_row, read_metrics, write_metrics

__all__ = [
    "METRIC_COLUMNS",
    "PhasePaths",
    "atomic_path",
    "best_model_path",
    "find_runs",
    "latest_run",
    "metrics_row",
    "new_run_dir",
    "read_json",
    "read_metrics",
    "remove_temporaries",
    "splits_dir",
    "write_json",
    "write_metrics",
    "write_text",
    "write_with",
]
