"""make sweep: trials on cached features, resume, refusals, and two concurrent workers."""

from __future__ import annotations

import copy

import optuna
import pandas as pd
import pytest

from tests.conftest import demo_config
from transferlab.config import load_config
from transferlab.experiments.sweep import SweepError, run_sweep
from transferlab.runs import read_json


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The shrunk demo on 15 digits a class, small_resnet at 16 px, one batch an epoch; one
    output dir for the module, so the features are computed once for every test here."""
    root = tmp_path_factory.mktemp("sweep")
    return demo_config(
        root,
        {
            "model.backbone": "small_resnet",
            "model.image_size": 16,
            "data.subset_per_class": 15,
            "phase1.epochs": 1,
            # Every split in one batch: no second trace for a smaller last batch.
            "train.batch_size": 128,
            "sweep.epochs": [1, 2],
            "sweep.trials": 2,
            "report.output_dir": str(root / "reports"),
        },
    )


def with_settings(cfg, **sweep):
    changed = copy.deepcopy(cfg)
    for key, value in sweep.items():
        setattr(changed.sweep, key, value)
    return changed


def study_trials(cfg, name: str):
    url = f"sqlite:///{cfg.output_dir}/sweeps/{name}/study.db"
    return optuna.load_study(study_name=name, storage=url).get_trials()


@pytest.fixture(scope="module")
def swept(base):
    """A 2-trial sweep, then the same study asked for 4: the second runs only the 2 missing."""
    first = run_sweep(base)
    second = run_sweep(with_settings(base, trials=4))
    return first, second


def test_a_sweep_writes_its_trials_figure_summary_and_a_best_config_that_loads(swept):
    first, second = swept
    trials = pd.read_csv(second.run_dir / "trials.csv")
    assert trials["number"].tolist() == [0, 1, 2, 3]
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["learning_rate"].between(1e-4, 3e-2).all()
    assert trials["epochs"].isin([1, 2]).all()
    # The resumed run drew new settings, not its first trials' again.
    assert trials["learning_rate"].nunique() == 4
    assert (second.run_dir / "figures" / "sweep.png").stat().st_size > 1000

    summary = read_json(second.run_dir / "summary.json")
    assert summary["trials_complete"] + summary["trials_pruned"] == 4
    assert summary["finished_all"] and summary["storage"].startswith("sqlite:///")
    best = trials.loc[trials["value"].idxmax()]
    assert summary["best_value"] == pytest.approx(best["value"]) == second.best_value
    assert summary["best_trial"] == best["number"]

    tuned = load_config(second.best_config)
    settings = summary["best_settings"]
    assert tuned.phase1.learning_rate == pytest.approx(settings["learning_rate"])
    assert tuned.phase1.optimizer == settings["optimizer"]
    assert tuned.phase1.epochs == settings["epochs"]
    assert tuned.model.dropout == pytest.approx(settings["dropout"])
    assert tuned.train.class_weight == settings["class_weight"]
    assert tuned.data.subset_per_class == 15  # the rest is the run's own config
    assert f"best {second.monitor}" in str(second)


def test_a_resumed_sweep_runs_only_the_missing_trials(swept, base):
    first, second = swept
    assert (first.ran, second.ran) == (2, 2)
    assert len(pd.read_csv(first.run_dir / "trials.csv")) == 2
    assert len(study_trials(base, "demo_sweep")) == 4

    again = run_sweep(with_settings(base, trials=3))
    assert again.ran == 0 and str(again).startswith("nothing to run")
    assert (again.run_dir / "summary.json").is_file()
    assert len(study_trials(base, "demo_sweep")) == 4


def test_a_changed_search_space_is_refused_with_the_fix(swept, base):
    with pytest.raises(SweepError) as err:
        run_sweep(with_settings(base, trials=6, learning_rate=[1e-3, 1e-1]))
    message = str(err.value)
    assert "learning_rate [0.0001, 0.03] -> [0.001, 0.1]" in message
    assert "sweep.study=demo_sweep_2" in message and "study.db" in message
    assert len(study_trials(base, "demo_sweep")) == 4


def test_an_unreachable_storage_names_the_url_and_hides_the_password(base):
    cfg = with_settings(base, storage="postgresql://sweeper:secret@127.0.0.1:1/studies")
    with pytest.raises(SweepError, match=r"sweep.storage=postgresql://sweeper:\*\*\*@127") as err:
        run_sweep(cfg)
    assert "secret" not in str(err.value)
    with pytest.raises(SweepError, match="cannot be reached"):
        run_sweep(with_settings(base, storage="sqlite:////no/such/folder/study.db"))


def test_two_concurrent_workers_share_one_study(base):
    # Three trials: shares of 2 and 1, so a lost or doubled trial shows in the counts.
    result = run_sweep(with_settings(base, trials=3, workers=2, study="two_workers"))
    trials = study_trials(base, "two_workers")
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    # This process and one spawned worker, each with its share.
    workers = pd.Series([t.user_attrs["worker_pid"] for t in trials]).value_counts()
    assert workers.tolist() == [2, 1]
    assert result.ran == 3 and len(pd.read_csv(result.run_dir / "trials.csv")) == 3
