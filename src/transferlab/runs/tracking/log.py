"""Logging a run folder as one MLflow run, created once and updated on every re-log.

The run id is kept in the folder (``mlflow_run.json``, per tracking URI), so a resumed
phase appends its new epochs to the same MLflow run. Params, metrics and tags go in one
``log_batch``; only points the run does not hold yet are sent.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from transferlab.config import Config, config_from_dict
from transferlab.runs.files import read_json, write_json
from transferlab.runs.tracking.folder import (
    RECORD,
    artifact_files,
    config_params,
    final_metrics,
    kind_of,
    read_optional,
    run_tags,
    started_ms,
    status_of,
    step_metrics,
)
from transferlab.runs.tracking.store import (
    TrackingError,
    check_tracking,
    quick_http,
    sqlite_path,
    tracking_uri,
)


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


def new_params(logged: dict[str, str], params: dict[str, str]):
    """Params not yet logged, and the keys whose value differs from the logged one."""
    from mlflow.entities import Param

    fresh = [Param(k, v) for k, v in params.items() if k not in logged]
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
    return fresh, changed


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
