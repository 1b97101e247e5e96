"""What a run folder gives MLflow: params, metric history, final metrics, tags, artifacts.

Everything here reads files only (config.json, metrics.csv, summary.json, metrics.json,
trials.csv, cv.json, figures/), so it works for any stage's folder, old or new.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from transferlab.config import flatten
from transferlab.runs.files import read_json

# The MLflow run id of this folder, per tracking URI, so logging it again updates it.
RECORD = "mlflow_run.json"
# Old tracking servers cap param values at 500 characters; the full config is an artifact.
MAX_PARAM_CHARS = 500
TEXT_SUFFIXES = (".json", ".md", ".csv", ".txt", ".yaml")
MAX_TEXT_BYTES = 2_000_000  # predictions.csv of a large test set stays on disk only
MAX_FIGURE_BYTES = 20_000_000
# metrics.json sections that are tables, not numbers to chart.
SKIPPED_SECTIONS = ("per_class", "confusion_matrix", "per_group", "per_fold")
# metrics.json's "intervals": {"accuracy": {"low", "high"}} logs as accuracy_low/_high.
FLAT_SECTIONS = ("intervals",)
CENTRES = ("value", "mean", "estimate")


def read_optional(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def kind_of(run_dir: Path, experiment: str) -> str:
    """``phase1`` of ``<timestamp>_<experiment>_phase1``."""
    return run_dir.name.partition(f"_{experiment}_")[2] or run_dir.name.rpartition("_")[2]


def run_tags(run_dir: Path, kind: str, summary: dict) -> dict[str, str]:
    # Training names its phase; evaluate names the phase of the model it scored.
    scored = read_optional(run_dir / "metrics.json").get("model_phase")
    phase = summary.get("phase") or scored or (kind if kind.startswith("phase") else "")
    tags = {
        "transferlab.kind": kind,
        "transferlab.phase": phase,
        "transferlab.run_dir": str(run_dir.resolve()),
    }
    return {k: v for k, v in tags.items() if v}


def status_of(summary: dict) -> str:
    reason = summary.get("stop_reason")
    return {"interrupted": "KILLED", "nan_loss": "FAILED"}.get(reason, "FINISHED")


def started_ms(run_dir: Path) -> int:
    """When the run began: its config.json is the first file a stage writes."""
    first = run_dir / "config.json"
    return int((first if first.exists() else run_dir).stat().st_mtime * 1000)


def config_params(run_dir: Path) -> dict[str, str]:
    """The resolved config, flattened to dotted keys, as MLflow param strings."""
    config = read_optional(run_dir / "config.json")
    return {key: param_text(value) for key, value in flatten(config).items()}


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 3] + "..."
    return text


def step_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The run's tables as metric history {name: [(step, value), ...]}, numbers only.

    metrics.csv by epoch; a sweep's trials.csv by trial (``trial_*``); cv.json's
    per-fold table by fold (``fold_*``).
    """
    history: dict[str, list[tuple[int, float]]] = {}
    for rows, step, prefix in (
        (csv_rows(run_dir / "metrics.csv"), "epoch", ""),
        (csv_rows(run_dir / "trials.csv"), "number", "trial_"),
        (read_optional(run_dir / "cv.json").get("per_fold") or [], "fold", "fold_"),
    ):
        for index, row in enumerate(rows, start=1):
            at = number(row.get(step))
            for key, value in row.items():
                if key != step and (value := number(value)) is not None:
                    point = (index if at is None else int(at), value)
                    history.setdefault(metric_key(prefix + key), []).append(point)
    return history


def csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_metrics(run_dir: Path) -> dict[str, float]:
    """The numbers of summary.json (best_metrics as best_<name>), metrics.json and cv.json."""
    summary = read_optional(run_dir / "summary.json")
    found = numbers_in({k: v for k, v in summary.items() if k != "best_metrics"})
    best = summary.get("best_metrics") or {}
    found.update({f"best_{k}": v for k, v in numbers_in(best).items() if k != "epoch"})
    found.update(numbers_in(read_optional(run_dir / "metrics.json")))
    found.update(numbers_in(read_optional(run_dir / "cv.json")))
    return found


def numbers_in(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts, named ``section_key``.

    An interval reads as name, name_low, name_high: from {"low", "high"} with its
    "value" or "mean", from metrics.json's "intervals" section, or from a [low, high] pair.
    """
    found: dict[str, float] = {}
    for key, value in data.items():
        name = metric_key(f"{prefix}{key}")
        if key in SKIPPED_SECTIONS:
            continue
        if isinstance(value, dict):
            found.update(numbers_in(value, prefix if key in FLAT_SECTIONS else f"{name}_"))
            if {"low", "high"} <= value.keys():
                centre = next((value[c] for c in CENTRES if c in value), None)
                found.update({name: number(centre)} if number(centre) is not None else {})
                for c in CENTRES:
                    found.pop(f"{name}_{c}", None)
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            pair = [number(v) for v in value]
            if None not in pair:
                found[f"{name}_low"], found[f"{name}_high"] = pair
        elif (v := number(value)) is not None:
            found[name] = v
    return found


def number(value: Any) -> float | None:
    """A finite float from a number or numeric text; None otherwise (bools included)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def metric_key(key: str) -> str:
    # MLflow allows letters, digits, _ - . space : / in names, up to 250 characters.
    return re.sub(r"[^\w\-. :/]", "_", str(key))[:250]


def artifact_files(run_dir: Path) -> list[Path]:
    texts = [
        p
        for p in sorted(run_dir.iterdir())
        if p.is_file()
        and p.suffix in TEXT_SUFFIXES
        and p.name != RECORD
        and p.stat().st_size <= MAX_TEXT_BYTES
    ]
    figures = sorted(run_dir.glob("figures/**/*.png")) + sorted(run_dir.glob("*.png"))
    return texts + [p for p in figures if p.stat().st_size <= MAX_FIGURE_BYTES]
