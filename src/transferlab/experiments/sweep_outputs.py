"""What a sweep leaves in its run folder: trials.csv, a figure, summary.json, best_config.yaml.

Everything is read back from the study (its database), so the folder shows every trial
of the study, including those of earlier or concurrent runs, not only this run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from transferlab.config import Config
from transferlab.evaluation.figures import save_figure
from transferlab.experiments.features import head_config
from transferlab.runs import write_json, write_text, write_with

SETTING_COLUMNS = (
    "learning_rate",
    "optimizer",
    "weight_decay",
    "dropout",
    "label_smoothing",
    "class_weight",
    "epochs",
)


@dataclass
class SweepResult:
    """What ``run_sweep`` returns; ``str()`` is the line the CLI prints."""

    run_dir: Path
    study: str
    monitor: str
    requested: int
    ran: int  # trials this call ran (0: the study already had enough)
    counts: dict[str, int]  # complete, pruned, failed, running
    best_value: float | None
    best_trial: int | None
    best_settings: dict = field(default_factory=dict)
    best_config: Path | None = None

    def __str__(self) -> str:
        finished = self.counts["complete"] + self.counts["pruned"]
        lead = "nothing to run; " if self.ran == 0 else ""
        trials = (
            f"{finished} of {self.requested} trials ({self.counts['complete']} complete, "
            f"{self.counts['pruned']} pruned, {self.counts['failed']} failed)"
        )
        if self.best_trial is None:
            return f"{lead}{trials}, none complete; no best settings. Run folder: {self.run_dir}"
        settings = ", ".join(f"{k}={fmt(v)}" for k, v in self.best_settings.items())
        return (
            f"{lead}{trials}; best {self.monitor} {self.best_value:.4f} (trial "
            f"{self.best_trial}: {settings}); train it: make train-phase1 "
            f"CONFIG={self.best_config}"
        )


def fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_outputs(
    cfg: Config, study: optuna.Study, run_dir: Path, storage: str, ran: int, wall_s: float
) -> SweepResult:
    """trials.csv, figures/sweep.png, best_config.yaml, config.json and summary.json."""
    cfg.save(run_dir / "config.json")
    trials = trials_frame(study)
    write_with(run_dir / "trials.csv", lambda p: trials.to_csv(p, index=False))
    plot_trials(trials, cfg.train.monitor, run_dir / "figures" / "sweep.png")
    counts = {
        state.name.lower(): int((trials["state"] == state.name).sum())
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    counts["failed"] = counts.pop("fail")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value) if complete else None
    result = SweepResult(
        run_dir=run_dir,
        study=study.study_name,
        monitor=cfg.train.monitor,
        requested=cfg.sweep.trials,
        ran=ran,
        counts=counts,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        best_settings=best.user_attrs["settings"] if best else {},
    )
    if best:
        path = run_dir / "best_config.yaml"
        result.best_config = write_best_config(cfg, study.study_name, best, path)
    write_json(
        run_dir / "summary.json",
        {
            "study": study.study_name,
            "storage": storage,
            "monitor": result.monitor,
            "best_value": result.best_value,
            "best_trial": result.best_trial,
            "best_settings": result.best_settings,
            "best_config": str(result.best_config) if best else None,
            "trials_requested": result.requested,
            "trials_run_now": ran,
            **{f"trials_{k}": v for k, v in counts.items()},
            # False when fewer trials finished than asked (stale or failed trials).
            "finished_all": counts["complete"] + counts["pruned"] >= result.requested,
            "workers": cfg.sweep.workers,
            "wall_s": round(wall_s, 3),
        },
    )
    return result


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, epochs trained, its settings."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        settings = trial.user_attrs.get("settings", {})
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                # A pruned trial's value is its last reported one (Optuna's rule).
                "value": trial.value,
                "duration_s": trial.duration.total_seconds() if trial.duration else None,
                "epochs_trained": trial.user_attrs.get("epochs_trained"),
                **{key: settings.get(key) for key in SETTING_COLUMNS},
            }
        )
    columns = ["number", "state", "value", "duration_s", "epochs_trained"]
    return pd.DataFrame(rows, columns=[*columns, *SETTING_COLUMNS])


def plot_trials(trials: pd.DataFrame, monitor: str, path: Path) -> Path:
    """Left: each trial's score in order with the running best. Right: score by learning rate."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    by_trial, by_lr = fig.subplots(1, 2)
    complete = trials[trials["state"] == "COMPLETE"]
    pruned = trials[trials["state"] == "PRUNED"]
    for ax, x, log in ((by_trial, "number", False), (by_lr, "learning_rate", True)):
        ax.scatter(complete[x], complete["value"], color="C0", label="complete")
        ax.scatter(pruned[x], pruned["value"], color="C7", marker="x", label="pruned")
        ax.set_ylabel(monitor)
        ax.grid(alpha=0.3)
        if log:
            ax.set_xscale("log")
    if len(complete):
        best = np.fmax.accumulate(complete["value"].to_numpy())
        # Drawn on to the last trial: the best stands until a later one beats it.
        numbers = [*complete["number"], trials["number"].max()]
        by_trial.step(numbers, [*best, best[-1]], where="post", color="C1", label="best so far")
    by_trial.set_xlabel("trial")
    by_trial.legend(loc="best")
    by_lr.set_xlabel("learning rate")
    by_trial.set_title("Trials in order (pruned: last value before stopping)")
    by_lr.set_title("Score by learning rate")
    return save_figure(fig, path)


def write_best_config(cfg: Config, study: str, best: optuna.trial.FrozenTrial, path: Path) -> Path:
    """The run's config with the best trial's settings: `make train-phase1 CONFIG=` runs it."""
    tuned = head_config(cfg, **best.user_attrs["settings"])
    header = (
        f"# The best settings of sweep study {study} "
        f"(trial {best.number}, {cfg.train.monitor} {best.value:.4f}), set into phase1, "
        "model.dropout and train.\n# Train it: make train-phase1 CONFIG=<this file>\n"
    )
    return write_text(path, header + yaml.safe_dump(tuned.to_dict(), sort_keys=False))
