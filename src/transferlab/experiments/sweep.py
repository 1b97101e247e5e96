"""`make sweep`: an Optuna study over the head's settings, trained on cached features.

The backbone's features are computed once (``experiments.features`` keeps them on disk),
so a trial trains only the head, in seconds. Hopeless trials are pruned after a few
epochs. The study lives in a database, SQLite under ``outputs/sweeps/<study>/`` by
default: a killed sweep resumes with the trials it has, ``sweep.workers=N`` runs N
processes on this machine against one study, and ``sweep.storage=<database URL>`` lets
workers on several machines share it (docs/sweeps.md). The run folder gets trials.csv,
a figure, summary.json and best_config.yaml (``sweep_outputs``).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import keras
import numpy as np
import optuna
from optuna.trial import TrialState

from transferlab.config import Config
from transferlab.experiments.features import (
    FeatureTable,
    backbone_features,
    head_config,
    train_head,
)
from transferlab.experiments.sweep_outputs import SweepResult, write_outputs
from transferlab.progress import say
from transferlab.runs import new_run_dir
from transferlab.runs.tracking import check_tracking, track_run

SPACE_KEYS = (
    "optimizer",
    "learning_rate",
    "weight_decay",
    "dropout",
    "label_smoothing",
    "class_weight",
    "epochs",
)
LOG_SCALED = ("learning_rate", "weight_decay")
# What sweep.trials counts: trials that ran to a verdict (a failed trial is retried).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A worker's heartbeat: a trial silent for GRACE_S seconds (its process was killed) is
# marked failed, so it neither counts as finished nor stays "running" forever.
HEARTBEAT_S, GRACE_S = 30, 120


class SweepError(ValueError):
    """A sweep that cannot run as configured; the message names the problem and the fix."""


def run_sweep(cfg: Config) -> SweepResult:
    """The sweep stage: run the trials ``sweep.trials`` still lacks, then write the run folder."""
    started = time.perf_counter()
    check_tracking(cfg)  # an unreachable MLflow store stops here, before any work
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(cfg)
    url = storage_url(cfg, name)
    study = open_study(cfg, url, name)  # a bad URL or a changed space fails before any work
    check_attr(study, url, "space", search_space(cfg))
    # Every split, as lr-find and cv ask for them: one cached file serves all three.
    table = backbone_features(cfg)
    check_attr(study, url, "data", data_fingerprint(cfg, table))
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, cfg.sweep.trials - done)
    if remaining:
        workers = min(cfg.sweep.workers, remaining)
        say(f"sweep {name}: {done} trials done, running {remaining} more on {workers} worker(s)")
        run_workers(cfg, url, name, remaining, workers, table)
    else:
        say(
            f"sweep {name}: nothing to run, the study already has {done} finished trials "
            f"(sweep.trials={cfg.sweep.trials}); raise sweep.trials to run more"
        )
    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "sweep")
    result = write_outputs(
        cfg, study, run_dir, masked(url), remaining, time.perf_counter() - started
    )
    track_run(cfg, result.run_dir, "sweep")
    return result


def study_name(cfg: Config) -> str:
    return cfg.sweep.study or f"{cfg.experiment}_sweep"


def storage_url(cfg: Config, name: str) -> str:
    """``sweep.storage``, or SQLite at ``<output_dir>/sweeps/<study>/study.db``."""
    if cfg.sweep.storage:
        return cfg.sweep.storage
    path = Path(cfg.output_dir) / "sweeps" / name / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def masked(url: str) -> str:
    """The URL as it may be printed and saved: any password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's database storage, with a heartbeat and, for SQLite, patience with locks.

    Several processes writing one SQLite file take turns; a 60 s busy timeout makes a
    writer wait for its turn instead of failing with "database is locked".
    """
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )


def open_study(cfg: Config, url: str, name: str) -> optuna.Study:
    """Create the study, or load it when it exists; an unreachable storage is a SweepError."""
    try:
        return optuna.create_study(
            storage=make_storage(url),
            study_name=name,
            direction="maximize",
            load_if_exists=True,
        )
    except Exception as err:
        # SQLAlchemy's errors (no server, wrong password, no driver, bad URL) carry many lines.
        text = str(err).strip()
        reason = text.splitlines()[0].rstrip(".") if text else type(err).__name__
        raise SweepError(
            f"sweep.storage={masked(url)} cannot be reached: {reason}. Check the URL (host, "
            "port, user, password, database name) and that the server is up and its driver "
            "installed (PostgreSQL: pip install psycopg2-binary); or leave sweep.storage empty "
            "for a SQLite file under outputs/sweeps/"
        ) from err


def load_study(url: str, name: str, seed: int = 0, worker: int = 0) -> optuna.Study:
    """The existing study, with this worker's sampler and the pruner."""
    storage = make_storage(url)
    # Seeded by the config's seed, the worker and the trials the study already has: workers
    # draw different settings, and a resumed sweep does not redraw its first trials' ones.
    known = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([seed, worker, known]).generate_state(1)[0])
    return optuna.load_study(
        study_name=name,
        storage=storage,
        # The constant liar makes a worker treat its peers' running trials as poor, so
        # workers do not all try the same region at once.
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        # A trial below the median of earlier trials at the same epoch stops there, once
        # 5 trials have finished and after a 2-epoch warm-up (the first epochs are noisy).
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )


def search_space(cfg: Config) -> dict:
    """What a trial may try, and what it is scored on: trials of two spaces do not mix."""
    space = {key: list(getattr(cfg.sweep, key)) for key in SPACE_KEYS}
    return {**space, "monitor": cfg.train.monitor}


def data_fingerprint(cfg: Config, table: FeatureTable) -> str:
    """The images, their split and label, and the backbone that made their features.

    Machine-independent (no paths), so workers on several machines agree.
    """
    model = cfg.model
    facts = [
        table.sample_ids.astype(str).tolist(),
        table.splits.tolist(),
        table.labels.tolist(),
        [model.backbone, Path(str(model.weights)).name, model.image_size, model.pooling],
        [model.inputs, cfg.seed],
    ]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def check_attr(study: optuna.Study, url: str, key: str, value) -> None:
    """Store ``value`` on a new study; refuse to resume one that holds a different one."""
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, value)
        return
    if stored == value:
        return
    if key == "space":
        changes = "; ".join(
            f"{k} {stored.get(k)} -> {value[k]}" for k in value if stored.get(k) != value[k]
        )
        what = f"a different search space ({changes})"
    else:
        what = "different data or a different backbone (images, splits, labels or model)"
    db = url.removeprefix("sqlite:///") if url.startswith("sqlite") else "its database"
    raise SweepError(
        f"sweep study {study.study_name!r} in {masked(url)} was run with {what}; its trials "
        f"would not compare with new ones. Give this sweep its own study "
        f"(SET='sweep.study={study.study_name}_2'), or delete {db} to start over"
    )


def run_workers(
    cfg: Config, url: str, name: str, remaining: int, workers: int, table: FeatureTable
) -> None:
    """``remaining`` trials over ``workers`` processes: this one and workers - 1 spawned.

    Each gets a fixed share, so one machine's workers run exactly ``remaining`` trials.
    """
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    if workers == 1:
        run_trials(cfg, url, name, shares[0], 0, table)
        return
    # spawn: a fresh interpreter per worker (forking a process that runs TensorFlow hangs).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
        futures = [
            pool.submit(run_trials, cfg, url, name, share, worker, None, workers)
            for worker, share in enumerate(shares[1:], start=1)
        ]
        run_trials(cfg, url, name, shares[0], 0, table)
        for future in futures:
            future.result()  # a worker's error is raised here


def run_trials(
    cfg: Config,
    url: str,
    name: str,
    count: int,
    worker: int,
    table: FeatureTable | None = None,
    workers: int = 1,
) -> None:
    """One worker: up to ``count`` trials, stopping early once the study has enough."""
    if table is None:  # a spawned worker: its own share of the cores, the features cached
        share_cores(workers)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        table = backbone_features(cfg)
    study = load_study(url, name, cfg.seed, worker)
    train_rows, val_rows = table.rows("train"), table.rows("val")
    if not len(val_rows):
        raise SweepError(
            "the sweep scores each trial on the val split, which is empty; give data.splits "
            "a validation share (e.g. [0.7, 0.15, 0.15])"
        )
    study.optimize(
        lambda trial: objective(trial, cfg, table, train_rows, val_rows),
        n_trials=count,
        # Workers elsewhere (a shared sweep.storage) may finish the study first.
        callbacks=[optuna.study.MaxTrialsCallback(cfg.sweep.trials, FINISHED), report_trial],
    )


def share_cores(workers: int) -> None:
    """Give a spawned worker its share of the cores, so N workers do not oversubscribe them."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    threads = max(1, (os.cpu_count() or 1) // workers)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def suggest_settings(trial: optuna.Trial, cfg: Config) -> dict:
    """One trial's head settings; a range or list of one value fixes that setting."""
    sweep = cfg.sweep
    settings = {}
    for key in SPACE_KEYS:
        values = getattr(sweep, key)
        if key == "weight_decay" and settings["optimizer"] != "adamw":
            continue  # only AdamW uses it: searching it elsewhere would be noise
        if len(set(values)) == 1:
            settings[key] = values[0]
        elif key in ("optimizer", "class_weight"):
            settings[key] = trial.suggest_categorical(key, list(values))
        elif key == "epochs":
            settings[key] = trial.suggest_int(key, values[0], values[-1])
        else:
            settings[key] = trial.suggest_float(key, values[0], values[-1], log=key in LOG_SCALED)
    return settings


class ReportToTrial(keras.callbacks.Callback):
    """Reports the monitored metric to the trial each epoch; stops training once pruned."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        super().__init__()
        self.trial, self.monitor = trial, monitor
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float(logs[self.monitor]), epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def objective(trial, cfg: Config, table: FeatureTable, train_rows, val_rows) -> float:
    """Train a head with the trial's settings; its score is the best epoch's val metric,

    the epoch train-phase1 would keep (it saves the best model, not the last).
    """
    settings = suggest_settings(trial, cfg)
    trial.set_user_attr("settings", settings)
    trial.set_user_attr("worker_pid", os.getpid())
    trial_cfg = head_config(cfg, **settings)
    monitor = cfg.train.monitor
    report = ReportToTrial(trial, monitor)
    callbacks = [report]
    if cfg.phase1.patience:  # phase 1's early stopping, as train-phase1 would run it
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor, patience=cfg.phase1.patience, mode="max")
        )
    _, history = train_head(trial_cfg, table, train_rows, val_rows, callbacks)
    # Each trial builds a new model: drop the last one's graph so trials stay fast.
    keras.backend.clear_session(free_memory=False)  # gc would cost ~0.5 s a trial
    values = history.history[monitor]
    trial.set_user_attr("epochs_trained", len(values))
    if report.pruned:
        raise optuna.TrialPruned(f"pruned after epoch {len(values)}")
    return max(values)


def report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial."""
    epochs = trial.user_attrs.get("epochs_trained", 0)
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE:
        verdict = f"{trial.value:.4f}"
    else:
        last = trial.intermediate_values
        verdict = f"{trial.state.name.lower()} at {last[max(last)]:.4f}" if last else "failed"
    say(f"sweep trial {trial.number}: {verdict} ({epochs} epochs, {seconds:.1f} s)")
