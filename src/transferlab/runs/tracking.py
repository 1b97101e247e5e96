"""MLflow tracking: a finished run folder, logged to MLflow as one MLflow run.

The run folder stays the interface between stages; MLflow gets a copy of it to browse
and compare: the resolved config as params, metrics.csv as per-epoch metric history,
summary.json / metrics.json numbers as final metrics, figures and small text files as
artifacts. ``tracking.mlflow`` picks the store:

- ``""`` / ``off``: no tracking;
- ``on``: ``sqlite:///<output_dir>/mlflow.db`` (artifacts in ``<output_dir>/mlartifacts``);
- a folder: ``<folder>/mlflow.db`` (MLflow's plain-file store is in maintenance mode and
  refuses to start, so a folder holds a SQLite store); a ``.db`` file: that SQLite file;
- any tracking URI: ``sqlite:///file.db``, ``http://host:5000``, ``postgresql://...``.

Stages call ``check_tracking(cfg)`` before any work, so a store that cannot be reached
stops them at once, and ``track_run(cfg, run_dir, kind)`` when the run folder is
complete; a failure then only warns, the files stay, and

    python -m transferlab.runs.tracking outputs/runs/<run-id> [--uri URI]

logs the folder later (a resumed phase updates its MLflow run, never duplicates it).
mlflow is imported inside functions: with tracking off it is never loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from transferlab.config import Config, ConfigError, config_from_dict, flatten
from transferlab.config.schema import did_you_mean
from transferlab.runs.files import read_json, write_json

# The MLflow run id of this folder, per tracking URI, so logging it again updates it.
RECORD = "mlflow_run.json"
OFF_WORDS = ("", "off", "false", "no", "none")
ON_WORDS = ("on", "true", "yes", "default")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")
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
HEALTH_TIMEOUT_S = 3.0


class TrackingError(ConfigError):
    """``tracking.mlflow`` names a store that cannot be used; the message says the fix."""


def tracking_uri(cfg: Config) -> str | None:
    """The MLflow tracking URI ``tracking.mlflow`` stands for, or None when tracking is off."""
    value = str(cfg.tracking.mlflow).strip()
    if value.lower() in OFF_WORDS:
        return None
    if value.lower() in ON_WORDS:
        return sqlite_uri(Path(cfg.output_dir) / "mlflow.db")
    scheme = scheme_of(value)
    if scheme is None:
        return local_store_uri(Path(value))
    if scheme not in SCHEMES:
        raise TrackingError(
            f"tracking.mlflow={value!r}: unknown scheme {scheme!r}"
            f"{did_you_mean(scheme, SCHEMES)}; use a folder, sqlite:///file.db, "
            "http://host:5000, or tracking.mlflow=on"
        )
    if scheme == "file":
        return local_store_uri(Path(urlparse(value).path))
    return value


def scheme_of(value: str) -> str | None:
    """``http`` of ``http://host``; None for a path (``C:\\runs`` included)."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", value)
    return match.group(1).lower() if match else None


def local_store_uri(path: Path) -> str:
    """A ``.db`` file is a SQLite store; any other path is a folder holding mlflow.db."""
    if path.suffix.lower() in SQLITE_SUFFIXES:
        return sqlite_uri(path)
    return sqlite_uri(path / "mlflow.db")


def sqlite_uri(path: Path) -> str:
    # sqlite:////abs/file.db on POSIX (three slashes, then the absolute path).
    return "sqlite:///" + path.resolve().as_posix()


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def check_tracking(cfg: Config) -> str | None:
    """Check that the tracking store can be reached; call before a stage does any work.

    Returns the tracking URI (None when tracking is off). Raises TrackingError naming the
    URI and the fix. Fast: a local store is checked on disk, a server with one request
    of at most a few seconds.
    """
    uri = tracking_uri(cfg)
    if uri is None:
        return None
    setting = f"tracking.mlflow={cfg.tracking.mlflow!r}"
    if uri.startswith("sqlite:"):
        if names_a_folder(cfg):
            make_folder(sqlite_path(uri).parent, setting)
        check_sqlite(uri, setting)
    elif scheme_of(uri) in ("http", "https"):
        check_server(uri, setting)
    return uri


def names_a_folder(cfg: Config) -> bool:
    """``on`` or a folder: a store of our own making, created like output_dir is.

    A SQLite file named outright (``x.db``, ``sqlite:///...``) must be in a folder that
    exists, so a typo in its path is an error rather than a new folder somewhere.
    """
    value = str(cfg.tracking.mlflow).strip()
    if value.lower() in ON_WORDS:
        return True
    scheme = scheme_of(value)
    path = Path(urlparse(value).path if scheme == "file" else value)
    return scheme in (None, "file") and path.suffix.lower() not in SQLITE_SUFFIXES


def make_folder(folder: Path, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(
            f"{setting}: cannot create the tracking folder {folder} ({err.strerror}). "
            "Point tracking.mlflow at a folder you can write, or tracking.mlflow=on"
        ) from None


def check_sqlite(uri: str, setting: str) -> None:
    path = sqlite_path(uri)
    folder = path.parent
    if not folder.is_dir():
        raise TrackingError(
            f"{setting}: the SQLite store {uri} is in {folder}, which does not exist. "
            f"Create it (mkdir -p {folder}), point tracking.mlflow elsewhere, or use "
            "tracking.mlflow=on for <output_dir>/mlflow.db"
        )
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise TrackingError(
            f"{setting}: cannot write the SQLite store {uri} ({target} is not writable). "
            "Point tracking.mlflow at a folder you can write, or tracking.mlflow=on"
        )


def check_server(uri: str, setting: str) -> None:
    """One short request to the server's /health; any HTTP answer means it is up."""
    if not urlparse(uri).netloc:
        raise TrackingError(f"{setting}: {uri} names no host; e.g. http://127.0.0.1:5000")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: auth or path problems show up, as warnings, when logging
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"{setting}: cannot reach the MLflow tracking server at {uri} ({reason}). "
            "Start it (pip install mlflow; mlflow server --host 127.0.0.1 --port 5000), "
            "fix the URI, or track locally with tracking.mlflow=on (or turn tracking off "
            "with tracking.mlflow=off)"
        ) from None


@contextlib.contextmanager
def quick_http():
    """Bound MLflow's HTTP retries (its defaults retry for minutes) unless the user set them."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    added = [k for k in limits if k not in os.environ]
    os.environ.update({k: limits[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def track_run(cfg: Config, run_dir: str | Path, kind: str, strict: bool = False) -> str | None:
    """Log a complete run folder to MLflow when ``tracking.mlflow`` is set; its run id.

    A failure warns (with the command that logs the folder later) and returns None, so a
    finished phase never crashes on tracking; ``strict`` raises instead.
    """
    run_dir = Path(run_dir)
    try:
        # Fails in a second where MLflow's client would retry for a while.
        uri = check_tracking(cfg)
        if uri is None:
            return None
        with quick_http():
            run_id = log_run(uri, cfg.experiment, run_dir, kind)
    except Exception as err:
        if strict:
            raise
        warnings.warn(
            f"could not log {run_dir} to MLflow (tracking.mlflow={cfg.tracking.mlflow!r}): "
            f"{err}. The run's files are kept; once the store is reachable, log it with: "
            f"python -m transferlab.runs.tracking {run_dir}",
            stacklevel=2,
        )
        return None
    print(f"[transferlab] logged {run_dir.name} to MLflow ({uri}), run {run_id}", flush=True)
    return run_id


def log_run(uri: str, experiment: str, run_dir: Path, kind: str) -> str:
    """Create or update the MLflow run of ``run_dir``; params, metrics, tags, artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = existing_run(client, uri, run_dir)
    summary = read_optional(run_dir / "summary.json")
    if run is None:
        experiment_id = experiment_id_of(client, experiment, uri)
        run = client.create_run(
            experiment_id,
            start_time=started_ms(run_dir),
            run_name=run_dir.name,
            tags=run_tags(run_dir, kind, summary),
        )
        remember_run(run_dir, uri, run.info.run_id)
    run_id = run.info.run_id
    params, changed = new_params(run.data.params, config_params(run_dir))
    if changed:
        warnings.warn(
            f"MLflow keeps a run's params fixed; not updating {', '.join(changed)} of "
            f"run {run_id} ({run_dir.name})",
            stacklevel=3,
        )
    metrics = new_metrics(client, run, step_metrics(run_dir), final_metrics(run_dir))
    client.log_batch(run_id, metrics=metrics, params=params)
    log_artifacts(client, run_id, run_dir)
    client.set_terminated(run_id, status_of(summary), end_time=int(time.time() * 1000))
    return run_id


def existing_run(client, uri: str, run_dir: Path):
    """The MLflow run this folder was logged to at ``uri`` before, if it is still there."""
    run_id = read_optional(run_dir / RECORD).get("runs", {}).get(uri)
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        # Deleted for good, or a new store at the same URI: log a new run. Anything
        # else (the store is down) must not: it would duplicate the run later.
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    return run if run.info.lifecycle_stage == "active" else None


def remember_run(run_dir: Path, uri: str, run_id: str) -> None:
    record = read_optional(run_dir / RECORD)
    record.setdefault("runs", {})[uri] = run_id
    write_json(run_dir / RECORD, record)


def experiment_id_of(client, name: str, uri: str) -> str:
    """The experiment's id, created on first use (artifacts beside a SQLite store)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if uri.startswith("sqlite:"):
            # MLflow's default is ./mlruns under whatever folder the process started in.
            location = (sqlite_path(uri).resolve().parent / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        # Runs cannot be added to a deleted experiment, nor a new one take its name.
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


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


def read_optional(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def config_params(run_dir: Path) -> dict[str, str]:
    """The resolved config, flattened to dotted keys, as MLflow param strings."""
    config = read_optional(run_dir / "config.json")
    return {key: param_text(value) for key, value in flatten(config).items()}


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 3] + "..."
    return text


def new_params(logged: dict[str, str], params: dict[str, str]):
    """Params not yet logged, and the keys whose value differs from the logged one."""
    from mlflow.entities import Param

    fresh = [Param(k, v) for k, v in params.items() if k not in logged]
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
    return fresh, changed


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


def new_metrics(client, run, history: dict, final: dict) -> list:
    """Metric points not in the run yet: per-epoch ones by step, final ones by value."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    known = run.data.metrics
    points = []
    for key, values in history.items():
        logged = (
            {m.step for m in client.get_metric_history(run.info.run_id, key)}
            if key in known
            else set()
        )
        points += [Metric(key, v, now, step) for step, v in values if step not in logged]
    for key, value in final.items():
        if known.get(key) != value:
            points.append(Metric(key, value, now, 0))
    return points


def log_artifacts(client, run_id: str, run_dir: Path) -> None:
    """figures/*.png and the run's small text files; logging one again replaces it."""
    for path in artifact_files(run_dir):
        folder = path.parent.relative_to(run_dir).as_posix()
        client.log_artifact(run_id, str(path), None if folder == "." else folder)


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


def kind_of(run_dir: Path, experiment: str) -> str:
    """``phase1`` of ``<timestamp>_<experiment>_phase1``."""
    return run_dir.name.partition(f"_{experiment}_")[2] or run_dir.name.rpartition("_")[2]


def log_existing(run_dir: str | Path, uri: str | None = None) -> str:
    """Log an already-finished run folder (its own config.json says where, unless ``uri``)."""
    run_dir = Path(run_dir)
    cfg = config_from_dict(read_json(run_dir / "config.json"))
    if uri is not None:
        cfg.tracking.mlflow = uri
    if tracking_uri(cfg) is None:
        raise TrackingError(
            f"{run_dir} was run with tracking off; name a store: "
            f"python -m transferlab.runs.tracking {run_dir} --uri on"
        )
    check_tracking(cfg)
    return track_run(cfg, run_dir, kind_of(run_dir, cfg.experiment), strict=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.runs.tracking", description="Log run folders to MLflow."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="outputs/runs/<run-id> ...")
    parser.add_argument("--uri", help="tracking URI (default: the run's tracking.mlflow)")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.run_dirs:
            log_existing(run_dir, args.uri)
    except Exception as err:  # MLflow's errors too: each says what went wrong
        print(f"transferlab: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
