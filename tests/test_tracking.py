"""MLflow tracking: a run folder logged to a SQLite store and read back with MlflowClient."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import demo_config
from transferlab.config import load_config
from transferlab.runs import write_metrics
from transferlab.runs.tracking import (
    RECORD,
    TrackingError,
    check_tracking,
    log_existing,
    track_run,
    tracking_uri,
)
from transferlab.training import train_phase

EPOCHS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module: creating one runs MLflow's migrations (~2 s)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


def fake_phase_run(root: Path, store: str, name: str = "20250101-000000_demo_phase1") -> tuple:
    """A phase-1 run folder as training writes it: config, metrics.csv, summary, a figure."""
    cfg = demo_config(root, {"tracking.mlflow": store})
    run_dir = Path(cfg.output_dir) / "runs" / name
    (run_dir / "figures").mkdir(parents=True)
    cfg.save(run_dir / "config.json")
    rows = [
        {"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.5 + 0.1 * e, "learning_rate": 1e-3}
        for e in range(1, EPOCHS + 1)
    ]
    write_metrics(run_dir / "metrics.csv", rows)
    summary = {
        "phase": "phase1",
        "best_epoch": 3,
        "best_metrics": rows[-1],
        "stop_reason": "completed",
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "figures" / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return cfg, run_dir


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_phase_run_is_logged_and_read_back(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store)
    run_id = track_run(cfg, run_dir, "phase1", strict=True)
    client = MlflowClient(store)
    run = client.get_run(run_id)

    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "demo"
    assert run.data.tags["transferlab.kind"] == "phase1"
    assert run.data.tags["transferlab.run_dir"] == str(run_dir.resolve())
    params = run.data.params
    assert params["phase1.epochs"] == str(cfg.phase1.epochs)
    assert params["model.backbone"] == "resnet50"
    assert params["data.splits"] == "[0.7, 0.15, 0.15]"
    history = client.get_metric_history(run_id, "val_accuracy")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.8)
    assert "accuracy" not in run.data.metrics  # NaN columns are left out
    assert artifact_paths(client, run_id) >= {
        "config.json",
        "metrics.csv",
        "summary.json",
        "figures/training_curves.png",
    }
    assert json.loads((run_dir / RECORD).read_text())["runs"][store] == run_id


def test_logging_a_resumed_run_again_updates_the_same_mlflow_run(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store, "20250101-000001_demo_phase1")
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "stop_reason": "interrupted"}))
    first = track_run(cfg, run_dir, "phase1", strict=True)
    client = MlflowClient(store)
    assert client.get_run(first).info.status == "KILLED"
    # The phase resumes, runs one more epoch and finishes.
    (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = [
        {"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.5 + 0.1 * e} for e in range(1, EPOCHS + 2)
    ]
    write_metrics(run_dir / "metrics.csv", rows)
    second = track_run(cfg, run_dir, "phase1", strict=True)

    assert second == first
    assert client.get_run(first).info.status == "FINISHED"
    runs = client.search_runs(
        [client.get_experiment_by_name("demo").experiment_id],
        f"attributes.run_name = '{run_dir.name}'",
    )
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(first, "val_accuracy")]
    assert steps == [1, 2, 3, 4]


def test_evaluate_numbers_and_intervals_become_metrics(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store, "20250101-000002_demo_evaluate")
    (run_dir / "metrics.csv").unlink()
    (run_dir / "summary.json").unlink()
    metrics = {
        "accuracy": 0.9,
        "intervals": {"accuracy": {"value": 0.9, "low": 0.85, "high": 0.94, "method": "wilson"}},
        "group_spread": {"mean": 0.7, "range": [0.5, 0.8]},
        "per_class": {"0": {"f1": 1.0}},
        "roc_auc": None,
        "split": "test",
        "model_phase": "phase2",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    run = MlflowClient(store).get_run(log_existing(run_dir))

    assert run.data.metrics == {
        "accuracy": 0.9,
        "accuracy_low": 0.85,
        "accuracy_high": 0.94,
        "group_spread_mean": 0.7,
        "group_spread_range_low": 0.5,
        "group_spread_range_high": 0.8,
    }
    assert run.data.tags["transferlab.kind"] == "evaluate"
    assert run.data.tags["transferlab.phase"] == "phase2"


def test_sweep_trials_and_cv_folds_become_metric_history(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store, "20250101-000005_demo_cv")
    (run_dir / "metrics.csv").unlink()
    (run_dir / "trials.csv").write_text(
        "number,state,value,learning_rate,optimizer\n0,COMPLETE,0.5,0.01,adam\n1,PRUNED,,0.1,sgd\n"
    )
    cv = {
        "per_fold": [{"fold": 0, "n": 5, "accuracy": 0.6}, {"fold": 1, "n": 5, "accuracy": 0.8}],
        "mean": {"accuracy": {"mean": 0.7, "sd": 0.14, "low": 0.5, "high": 0.9}},
    }
    (run_dir / "cv.json").write_text(json.dumps(cv))
    client = MlflowClient(store)
    run_id = track_run(cfg, run_dir, "cv", strict=True)

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    assert history("trial_value") == [(0, 0.5)]
    assert history("trial_learning_rate") == [(0, 0.01), (1, 0.1)]
    assert history("fold_accuracy") == [(0, 0.6), (1, 0.8)]
    metrics = client.get_run(run_id).data.metrics
    assert (metrics["mean_accuracy"], metrics["mean_accuracy_low"]) == (0.7, 0.5)
    assert "mean_accuracy_mean" not in metrics


def test_long_config_values_are_cut_to_a_param_mlflow_accepts(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store, "20250101-000003_demo_phase1")
    config = json.loads((run_dir / "config.json").read_text())
    config["compare"]["runs"] = [f"20250101-000000_demo_evaluate_{i}" for i in range(100)]
    (run_dir / "config.json").write_text(json.dumps(config))
    run = MlflowClient(store).get_run(track_run(cfg, run_dir, "phase1", strict=True))
    assert len(run.data.params["compare.runs"]) == 500


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_a_clear_error_at_once(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = demo_config(tmp_path, {"tracking.mlflow": uri})
    started = time.perf_counter()
    with pytest.raises(TrackingError, match=f"cannot reach the MLflow tracking server at {uri}"):
        check_tracking(cfg)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sqlite:///{root}/missing/mlflow.db", "does not exist. Create it"),
        ("htp://127.0.0.1:5000", "unknown scheme 'htp'; did you mean 'http'"),
    ],
)
def test_a_store_that_cannot_be_used_names_the_fix(tmp_path, value, message):
    cfg = demo_config(tmp_path, {"tracking.mlflow": value.format(root=tmp_path)})
    with pytest.raises(TrackingError, match=message):
        check_tracking(cfg)


def test_a_failure_after_training_warns_and_keeps_the_files(tmp_path, store):
    cfg, run_dir = fake_phase_run(tmp_path, store, "20250101-000004_demo_phase1")
    cfg.tracking.mlflow = f"http://127.0.0.1:{closed_port()}"
    with pytest.warns(UserWarning, match="python -m transferlab.runs.tracking"):
        assert track_run(cfg, run_dir, "phase1") is None
    assert (run_dir / "metrics.csv").is_file()


@pytest.mark.parametrize("word", ["on", "true", "yes"])
def test_tracking_on_is_a_sqlite_file_under_output_dir(tmp_path, word):
    cfg = load_config(None, f"tracking.mlflow={word} output_dir={tmp_path / 'out'}")
    expected = f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').as_posix()}"
    assert cfg.tracking.mlflow == "on"
    assert tracking_uri(cfg) == check_tracking(cfg) == expected
    assert load_config(None, "tracking.mlflow=off").tracking.mlflow == ""
    assert tracking_uri(load_config()) is None


def test_a_folder_holds_a_sqlite_store_and_is_created(tmp_path):
    cfg = load_config(None, {"tracking.mlflow": str(tmp_path / "new" / "mlruns")})
    expected = f"sqlite:///{(tmp_path / 'new' / 'mlruns' / 'mlflow.db').as_posix()}"
    assert tracking_uri(cfg) == check_tracking(cfg) == expected
    assert (tmp_path / "new" / "mlruns").is_dir()


def test_train_phase_logs_its_run_to_mlflow(tmp_path, store):
    cfg = demo_config(
        tmp_path,
        {
            # small_resnet at 16 px: a real phase 1 in seconds.
            "model.backbone": "small_resnet",
            "model.image_size": 16,
            "data.subset_per_class": 10,
            "train.batch_size": 16,
            "phase1.epochs": 2,
            "tracking.mlflow": store,
        },
    )
    result = train_phase(cfg, "phase1")

    client = MlflowClient(store)
    run = client.get_run(json.loads((result.run_dir / RECORD).read_text())["runs"][store])
    assert run.info.run_name == result.run_dir.name
    assert run.data.tags["transferlab.phase"] == "phase1"
    assert run.data.params["phase1.epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    best = result.best_metrics["val_accuracy"]
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert "figures/training_curves.png" in artifact_paths(client, run.info.run_id)


def test_train_phase_with_an_unreachable_store_stops_before_any_work(tmp_path):
    cfg = demo_config(tmp_path, {"tracking.mlflow": f"http://127.0.0.1:{closed_port()}"})
    with pytest.raises(TrackingError, match="cannot reach"):
        train_phase(cfg, "phase1")
    assert not (tmp_path / "outputs" / "runs").exists()
