"""``compare_runs(cfg)``: which of several evaluate runs is better, and is it real?

Reads evaluate run directories (config.json, metrics.json, predictions.csv) and the
training runs behind their models (summary.json, metrics.csv, config.json), and writes
``outputs/runs/<ts>_<experiment>_compare/`` with:

- compare.md: the settings that differ, each run's metrics with their intervals,
  training time and epochs, validation curves on shared axes, and for every pair of
  runs a paired test (exact McNemar on correctness, paired bootstrap on macro-F1) with
  the difference, its interval and a plain verdict;
- compare.json: the same numbers;
- figures/curves.png.

Runs are compared image by image, so they must have been scored on the same images:
runs that were not are refused before anything is written.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.config import Config
from transferlab.config.schema import did_you_mean
from transferlab.experiments.paired import compare_predictions
from transferlab.experiments.stats import format_interval
from transferlab.runs import find_runs, new_run_dir, read_json, write_json, write_text, write_with

PHASES = ("phase1", "phase2")
# Metrics shown per run, as metrics.json names them (its "intervals" hold their bounds).
SHOWN = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "balanced_accuracy": "Balanced accuracy",
    "roc_auc": "ROC AUC",
}
# Config sections that cannot change what an evaluate run measured.
IGNORED = ("compare.", "report.", "bench.", "lr_find.", "sweep.", "cv.", "tracking.", "predict.")
CURVES = (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy"))
CURVES += (("val_macro_f1", "validation macro-F1"),)


class CompareError(ValueError):
    """Runs that cannot be compared; the message names them and what to do."""


@dataclass
class EvaluateRun:
    """One evaluate run and the training runs of the model it scored."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    training: dict[str, Path] = field(default_factory=dict)  # phase -> run dir

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class CompareResult:
    run_dir: Path
    runs: list[str]
    pairs: list[dict]
    page: Path

    def __str__(self) -> str:
        lines = [f"{p['a']} vs {p['b']}: {p['accuracy']['verdict']}" for p in self.pairs]
        return "\n".join([*lines, f"written to {self.page}"])


def compare_runs(cfg: Config, runs: list[str] | None = None) -> CompareResult:
    """Compare evaluate runs (``runs``, else ``cfg.compare.runs``, else the latest ones)."""
    root = Path(cfg.output_dir) / "runs"
    ids = list(runs or cfg.compare.runs) or default_runs(cfg)
    loaded = [read_evaluate_run(resolve_run(root, run_id)) for run_id in ids]
    if len(loaded) < 2:
        raise CompareError(fewer_than_two(cfg, loaded))
    check_same_images(loaded)
    for run in loaded:
        run.training = training_runs(cfg, run)
    letters = dict(zip((r.name for r in loaded), string.ascii_uppercase, strict=False))
    pairs = [
        pair_test(cfg, loaded[i], loaded[j], letters)
        for i in range(len(loaded))
        for j in range(i + 1, len(loaded))
    ]
    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "compare")
    cfg.save(run_dir / "config.json")
    settings = differing_settings(loaded)
    table = [run_row(run, letters[run.name]) for run in loaded]
    curves = plot_curves(run_dir / "figures" / "curves.png", loaded, letters)
    result = {
        "runs": [{"letter": letters[r.name], "run": r.name, "path": str(r.path)} for r in loaded],
        "settings": settings,
        "metrics": table,
        "pairs": pairs,
        "alpha": cfg.compare.alpha,
        "images": len(loaded[0].predictions),
        "split": loaded[0].metrics.get("split"),
    }
    write_json(run_dir / "compare.json", result)
    page = write_text(run_dir / "compare.md", markdown(cfg, result, curves, run_dir))
    return CompareResult(run_dir, [r.name for r in loaded], pairs, page)


# --- which runs ----------------------------------------------------------------------------


def default_runs(cfg: Config) -> list[str]:
    """The experiment's latest evaluate run of each distinct model (its path and phase)."""
    latest: dict[tuple, str] = {}
    for path in find_runs(cfg.output_dir, cfg.experiment, "evaluate"):  # oldest first
        metrics_file = path / "metrics.json"
        if not (metrics_file.is_file() and (path / "predictions.csv").is_file()):
            continue  # an evaluate run that did not finish
        metrics = read_json(metrics_file)
        key = (metrics.get("model_path"), metrics.get("model_phase"), metrics.get("split"))
        latest.pop(key, None)  # re-insert, so the order is that of each key's newest run
        latest[key] = path.name
    return list(latest.values())


def fewer_than_two(cfg: Config, loaded: list[EvaluateRun]) -> str:
    have = f" (found only {loaded[0].name})" if loaded else ""
    return (
        f"compare needs at least two evaluate runs of experiment {cfg.experiment!r}{have} "
        f"under {Path(cfg.output_dir) / 'runs'}. Make them: `make evaluate` after each "
        "training run you want to compare (phase 1's model, then phase 2's; or the same "
        "CONFIG with another SET=...), then `make compare`, or name any two with "
        "RUNS='<run-id> <run-id>'."
    )


def resolve_run(root: Path, run_id: str) -> Path:
    """``outputs/runs/<run_id>``, or an error naming the nearest run ids."""
    path = Path(run_id)
    if path.is_dir():
        return path
    if (root / run_id).is_dir():
        return root / run_id
    existing = sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    evaluates = [name for name in existing if name.endswith("_evaluate")]
    hint = did_you_mean(run_id, evaluates, existing, cutoff=0.4)
    listed = ", ".join(evaluates[-5:]) or "none"
    raise CompareError(
        f"no run {run_id!r} under {root}{hint or '.'} Runs live in {root}/<run-id>/; the latest "
        f"evaluate runs there: {listed}. Pass their folder names: RUNS='<run-id> <run-id>'."
    )


def read_evaluate_run(path: Path) -> EvaluateRun:
    missing = [f for f in ("metrics.json", "predictions.csv") if not (path / f).is_file()]
    if missing:
        raise CompareError(
            f"{path.name} is not a finished evaluate run (no {' or '.join(missing)}); compare "
            "takes the folders `make evaluate` writes (outputs/runs/<ts>_<experiment>_evaluate)"
        )
    names = {c: str for c in ("sample_id", "true_class", "predicted_class")}
    predictions = pd.read_csv(path / "predictions.csv", dtype=names)
    config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    return EvaluateRun(path, config, read_json(path / "metrics.json"), predictions)


def check_same_images(runs: list[EvaluateRun]) -> None:
    """Refuse runs not scored on the same images, with the same labels and classes."""
    first = runs[0]
    for other in runs[1:]:
        why = different_images(first, other)
        if why:
            raise CompareError(
                f"runs {first.name} and {other.name} were not scored on the same images: "
                f"{why}. A paired comparison needs the same images (a different split, "
                "data, seed, or a data.corrections that touched the test split changes "
                "them): re-run `make evaluate` for both models on the same split "
                "(eval.split) with the same data settings, then compare those runs."
            )


def different_images(a: EvaluateRun, b: EvaluateRun) -> str:
    """Why two runs' images differ, or "" when they are the same, in the same order."""
    split_a, split_b = a.metrics.get("split"), b.metrics.get("split")
    if split_a != split_b:
        return f"one is on the {split_a} split, the other on the {split_b} split"
    ids_a, ids_b = a.predictions["sample_id"], b.predictions["sample_id"]
    if len(ids_a) != len(ids_b):
        return f"{len(ids_a)} images against {len(ids_b)}"
    if not (ids_a.to_numpy() == ids_b.to_numpy()).all():
        shared = len(set(ids_a) & set(ids_b))
        return f"their sample_id lists differ ({shared} of {len(ids_a)} images shared)"
    if not (a.predictions["true_label"].to_numpy() == b.predictions["true_label"].to_numpy()).all():
        return "the same sample_ids carry different true labels"
    if class_names(a) != class_names(b):
        return f"different classes ({class_names(a)} against {class_names(b)})"
    return ""


def class_names(run: EvaluateRun) -> list[str]:
    names = run.metrics.get("class_names")
    if names:
        return list(names)
    return [c[len("prob_") :] for c in run.predictions.columns if c.startswith("prob_")]


def training_runs(cfg: Config, run: EvaluateRun) -> dict[str, Path]:
    """The phase runs that made the evaluated model: the phase's newest run before it.

    A phase 2 model was fine-tuned from phase 1's, so both phases' runs count.
    """
    model_phase = run.metrics.get("model_phase")
    if model_phase not in PHASES:
        model_phase = next(
            (p for p in PHASES if f"_{p}_" in run.metrics.get("model_path", "")), None
        )
    if model_phase is None:
        return {}
    experiment = run.config.get("experiment", cfg.experiment)
    found = {}
    for phase in PHASES[: PHASES.index(model_phase) + 1]:
        earlier = [
            p for p in find_runs(cfg.output_dir, experiment, phase) if p.name < run.path.name
        ]
        if earlier:
            found[phase] = earlier[-1]
    return found


# --- what differs --------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"phase1": {"epochs": 5}}`` -> ``{"phase1.epochs": 5}``; lists stay values."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_settings(run: EvaluateRun) -> dict[str, Any]:
    """The evaluate run's config, with the training settings its model was trained with.

    The training run's config.json says how the model was trained (the evaluate run's may
    have been edited since); eval.* settings are the evaluate run's own.
    """
    settings = flatten(run.config)
    for path in run.training.values():
        if (path / "config.json").is_file():
            trained = flatten(read_json(path / "config.json"))
            settings.update({k: v for k, v in trained.items() if not k.startswith("eval.")})
    settings["evaluated model"] = run.metrics.get("model_path")
    settings["model phase"] = run.metrics.get("model_phase")
    return {k: v for k, v in settings.items() if not k.startswith(IGNORED)}


def differing_settings(runs: list[EvaluateRun]) -> dict[str, list]:
    """``{setting: [value per run]}`` for only the settings whose values differ."""
    each = [run_settings(run) for run in runs]
    keys = sorted(set().union(*each))
    rows = {k: [s.get(k) for s in each] for k in keys}
    return {k: values for k, values in rows.items() if len({json.dumps(v) for v in values}) > 1}


# --- each run ------------------------------------------------------------------------------


def run_row(run: EvaluateRun, letter: str) -> dict[str, Any]:
    """A run's metrics with their intervals, and its training time and epochs."""
    intervals = run.metrics.get("intervals") or {}
    row: dict[str, Any] = {"letter": letter, "run": run.name, "images": len(run.predictions)}
    for key in SHOWN:
        value = run.metrics.get(key)
        bounds = intervals.get(key) or {}
        row[key] = {"value": value, "low": bounds.get("low"), "high": bounds.get("high")}
        row[key]["method"] = bounds.get("method")
    summaries = {
        p: read_json(path / "summary.json")
        for p, path in run.training.items()
        if (path / "summary.json").is_file()
    }
    times = [s.get("wall_time_s") for s in summaries.values() if s.get("wall_time_s") is not None]
    row["training_time_s"] = round(sum(times), 2) if times else None
    row["epochs"] = {p: s.get("epochs_run") for p, s in summaries.items()}
    row["training_runs"] = {p: path.name for p, path in run.training.items()}
    return row


def pair_test(cfg: Config, a: EvaluateRun, b: EvaluateRun, letters: dict[str, str]) -> dict:
    """The paired tests of B against A on their shared images."""
    names = class_names(a)
    columns = [f"prob_{n}" for n in names]
    missing = [c for c in columns if c not in a.predictions or c not in b.predictions]
    if missing:
        raise CompareError(
            f"{a.name} or {b.name} has no {missing[0]} column in predictions.csv; re-run "
            "`make evaluate` to write the per-class probabilities compare tests"
        )
    result = compare_predictions(
        a.predictions["true_label"].to_numpy(),
        a.predictions[columns].to_numpy(dtype=float),
        b.predictions[columns].to_numpy(dtype=float),
        alpha=cfg.compare.alpha,
        confidence=cfg.eval.confidence,
        resamples=cfg.eval.bootstrap,
        seed=cfg.seed,
        names=(letters[a.name], letters[b.name]),
    )
    return {"a": a.name, "b": b.name, **result}


# --- the page ------------------------------------------------------------------------------


def history_of(run: EvaluateRun) -> pd.DataFrame | None:
    """The model's validation history, phase 2's epochs after phase 1's."""
    parts, offset = [], 0
    for phase in PHASES:
        path = run.training.get(phase)
        if path is None or not (path / "metrics.csv").is_file():
            continue
        history = pd.read_csv(path / "metrics.csv").sort_values("epoch")
        parts.append(history.assign(epoch=history["epoch"] + offset))
        offset += int(history["epoch"].max()) if len(history) else 0
    return pd.concat(parts, ignore_index=True) if parts else None


def plot_curves(path: Path, runs: list[EvaluateRun], letters: dict[str, str]) -> Path | None:
    """Each run's validation loss, accuracy and macro-F1 per epoch, on shared axes."""
    histories = {letters[r.name]: history_of(r) for r in runs}
    histories = {k: h for k, h in histories.items() if h is not None and len(h)}
    if not histories:
        return None
    # A Figure, not pyplot: saving it leaves the calling notebook's backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, len(CURVES), sharex=True)
    for ax, (column, title) in zip(axes, CURVES, strict=True):
        for letter, history in histories.items():
            if column in history:
                ax.plot(history["epoch"], history[column], marker="o", label=f"run {letter}")
        ax.set_title(title)
        ax.set_xlabel("epoch (phase 2 continues phase 1)")
        if ax.get_lines():
            ax.legend()
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if not isinstance(value, list | dict) else json.dumps(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def metrics_table(rows: list[dict]) -> str:
    body = []
    for row in rows:
        cells = [f"**{row['letter']}**", f"`{row['run']}`", str(row["images"])]
        for key in SHOWN:
            m = row[key]
            shown = "—" if m["value"] is None else format_interval(m["value"], m["low"], m["high"])
            cells.append(shown)
        epochs = " + ".join(f"{n} ({p})" for p, n in row["epochs"].items() if n is not None)
        time = row["training_time_s"]
        cells += [f"{time:.1f} s" if time is not None else "—", epochs or "—"]
        body.append(cells)
    header = ["Run", "Folder", "Images", *SHOWN.values(), "Training time", "Epochs"]
    return table(header, body)


def pair_lines(pair: dict, letters: dict[str, str]) -> list[str]:
    a, b = letters[pair["a"]], letters[pair["b"]]
    acc, f1 = pair["accuracy"], pair["macro_f1"]
    return [
        f"### {b} against {a}",
        "",
        f"- **Accuracy** (exact McNemar on {acc['discordant']} images where they disagree: "
        f"{acc['only_b_right']} only {b} got right, {acc['only_a_right']} only {a}): "
        f"{acc['verdict']}.",
        f"- **Macro-F1** (paired bootstrap, {f1['resamples']} resamples): {f1['verdict']}.",
        "",
        table(
            ["", f"{b} − {a}", f"{round(100 * acc['confidence'])}% interval", "p", "Method"],
            [
                [
                    "Accuracy",
                    f"{acc['difference']:+.4f}",
                    f"[{acc['low']:+.4f}, {acc['high']:+.4f}]",
                    f"{acc['p_value']:.3g}",
                    f"{acc['method']}; {acc['interval_method']}",
                ],
                [
                    "Macro-F1",
                    f"{f1['difference']:+.4f}",
                    f"[{f1['low']:+.4f}, {f1['high']:+.4f}]",
                    f"{f1['p_value']:.3g}",
                    f1["method"],
                ],
            ],
        ),
        "",
    ]


def markdown(cfg: Config, result: dict, curves: Path | None, run_dir: Path) -> str:
    letters = {r["run"]: r["letter"] for r in result["runs"]}
    names = list(letters)
    lines = [
        f"# Compare runs — `{cfg.experiment}`",
        "",
        f"{len(names)} evaluate runs on the same {result['images']:,} "
        f"{result['split'] or ''} images; a difference counts as detected when p < "
        f"{result['alpha']} (compare.alpha).",
        "",
        "## Settings that differ",
        "",
    ]
    settings = result["settings"]
    if settings:
        rows = [[f"`{k}`", *(cell(v) for v in values)] for k, values in settings.items()]
        lines.append(table(["Setting", *(f"{letters[n]}" for n in names)], rows))
    else:
        lines.append("_none: the runs share every setting (a re-run of the same experiment)_")
    lines += ["", "## Metrics", "", metrics_table(result["metrics"]), ""]
    lines += [
        "Intervals are evaluate's (metrics.json): Wilson for accuracy, a stratified bootstrap "
        "for the others; a run evaluated before intervals existed shows the value alone.",
        "",
    ]
    if curves is not None:
        figure = curves.relative_to(run_dir).as_posix()
        lines += ["## Training curves", "", f"![Validation curves]({figure})", ""]
    lines += ["## Paired tests", ""]
    for pair in result["pairs"]:
        lines += pair_lines(pair, letters)
    return "\n".join(lines)
