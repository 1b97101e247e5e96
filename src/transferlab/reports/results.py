"""The day checkpoint's tables: key results and their changes, modes, model, classes.

Key results show phase 2's change over phase 1, and each day's are saved beside its
report (key_results.json) so that the next day's report shows what changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.reports.changes import (
    accuracy_interval,
    change_cell,
    evaluate_accuracy_interval,
    paired_test,
    phase_change,
    read_predictions,
    val_macro_f1_interval,
    verdicts,
    with_interval,
)
from transferlab.reports.markdown import num, seconds, table
from transferlab.reports.rules import finite, monitored
from transferlab.reports.runfiles import PHASES, RunFiles
from transferlab.runs import read_json, write_json

# The key results compared between phases and between days.
COMPARED = {
    "val_accuracy": "Best val accuracy",
    "val_macro_f1": "Best val macro-F1",
    "test_accuracy": "Test accuracy",
}
# Beside each day's report, so the next day's can show what changed.
SNAPSHOT = "key_results.json"


def best(run: RunFiles, key: str):
    """``key`` at the run's best epoch: summary.json's best_metrics, else metrics.csv's row.

    A run with no best epoch of its own (still running, or a phase 2 that never beat
    phase 1) shows its best row by the monitored metric.
    """
    value = run.summary.get("best_metrics", {}).get(key)
    history = run.history
    if value is not None or history is None or key not in history or history.empty:
        return value
    epoch = run.summary.get("best_epoch")
    if epoch:
        rows = history[history["epoch"] == epoch]
    else:
        rows = history.loc[[history[monitored(history, run.summary.get("monitor"))].idxmax()]]
    return rows[key].iloc[0] if len(rows) else None


def signed(change: float) -> str:
    return f"+{num(change)}" if change > 0 else num(change)


def key_values(runs: dict[str, RunFiles], phases, test_phase) -> dict[str, dict[str, float]]:
    """``{key: {phase: value}}`` for the compared key results that were measured."""
    values: dict[str, dict[str, float]] = {key: {} for key in COMPARED}
    for phase in phases:
        for key in ("val_accuracy", "val_macro_f1"):
            value = finite(best(runs[phase], key))
            if value is not None:
                values[key][phase] = value
    if test_phase:
        values["test_accuracy"][test_phase] = float(runs["evaluate"].metrics["accuracy"])
    return values


def key_results(runs, phases, test_phase, values) -> str:
    """Per phase with intervals, and phase 2's change over phase 1, tested image by image.

    Validation accuracy gets a Wilson interval on the validation split's size, val
    macro-F1 a bootstrap interval from val_predictions.csv, test accuracy evaluate's;
    the change is a paired test on the same validation images (phase 1's and phase 2's
    val_predictions.csv), or marked untested.
    """
    evaluation = runs.get("evaluate")
    both = len(phases) == 2
    tests = {}
    if both:
        change = phase_change(runs["phase2"])
        tests = {"val_accuracy": change, "val_macro_f1": change}

    def shown(key: str, phase: str):
        value = values[key].get(phase)
        if value is None:
            return "—"
        if key == "val_accuracy":
            return with_interval(
                value, accuracy_interval(value, runs[phase].summary.get("val_size"))
            )
        if key == "test_accuracy":
            return with_interval(value, evaluate_accuracy_interval(evaluation))
        return with_interval(value, val_macro_f1_interval(runs[phase]))

    def compared(key: str, label: str) -> list:
        row = [label, *(shown(key, p) for p in phases)]
        if both:
            before, after = (values[key].get(p) for p in PHASES)
            difference = after - before if before is not None and after is not None else None
            row.append(
                change_cell(difference, tests.get(key), key) if difference is not None else ""
            )
        return row

    def plain(label: str, cells: list) -> list:
        return [label, *cells, *([""] if both else [])]

    split = evaluation.metrics.get("split", "test") if evaluation else None
    rows = [
        compared("val_accuracy", COMPARED["val_accuracy"]),
        compared("val_macro_f1", COMPARED["val_macro_f1"]),
        compared("test_accuracy", f"Test accuracy ({split})" if split else "Test accuracy"),
        plain("Training time", [seconds(runs[p].summary.get("wall_time_s")) for p in phases]),
        plain("Epochs run", [runs[p].summary.get("epochs_run") for p in phases]),
        plain("Best epoch", [runs[p].summary.get("best_epoch") for p in phases]),
        plain("Stop reason", [str(runs[p].summary.get("stop_reason", "—")) for p in phases]),
    ]
    text = table(["", *phases, *(["Change"] if both else [])], rows)
    label = "Phase 2 − phase 1 (same validation images)"
    notes = verdicts([(label, key, test) for key, test in tests.items()])
    return text + ("\n\n" + "\n".join(f"- {line}" for line in notes) if notes else "")


# --- across days -----------------------------------------------------------------------


def write_snapshot(
    folder: Path, experiment: str, sprint: int, day: int, values, predictions=None
) -> Path:
    """Today's key results, and the per-image predictions behind them for tomorrow's tests."""
    snapshot = {"experiment": experiment, "sprint": sprint, "day": day, "results": values}
    snapshot["predictions"] = predictions or {}
    return write_json(folder / SNAPSHOT, snapshot)


def prediction_files(runs: dict[str, RunFiles], phases, test_phase) -> dict[str, dict[str, str]]:
    """``{key: {phase: file}}``: the per-image predictions each key result was measured on."""
    files: dict[str, dict[str, str]] = {key: {} for key in COMPARED}
    for phase in phases:
        path = runs[phase].path / "val_predictions.csv"
        if path.is_file():
            files["val_accuracy"][phase] = files["val_macro_f1"][phase] = str(path)
    if test_phase and (runs["evaluate"].path / "predictions.csv").is_file():
        files["test_accuracy"][test_phase] = str(runs["evaluate"].path / "predictions.csv")
    return files


def earlier_snapshot(report_dir: Path, experiment: str, sprint: int, day: int) -> dict | None:
    """Key results of the newest earlier day's checkpoint of this experiment, if any."""
    saved = [read_json(p) for p in Path(report_dir).glob(f"sprint*_day*_files/{SNAPSHOT}")]
    earlier = [
        s
        for s in saved
        if s.get("experiment") == experiment and (s["sprint"], s["day"]) < (sprint, day)
    ]
    return max(earlier, key=lambda s: (s["sprint"], s["day"]), default=None)


def progress_table(
    earlier: dict[str, Any], values: dict[str, dict[str, float]], files=None, settings=None
) -> str:
    """Each key result then and now, with its change tested on the same images.

    ``files``: today's ``prediction_files``; the earlier day's are in its snapshot. A
    change is tested when both days' predictions exist and cover the same images.
    """
    rows, tests = [], []
    then_files = earlier.get("predictions", {})
    for key, label in COMPARED.items():
        for phase in PHASES:
            before = earlier["results"].get(key, {}).get(phase)
            after = values[key].get(phase)
            if before is None and after is None:
                continue
            name = f"{label} ({phase})"
            test = day_test(then_files, files or {}, key, phase, settings or {})
            if test is not None:
                tests.append((name, key, test))
            difference = after - before if before is not None and after is not None else None
            rows.append([name, before, after, change_cell(difference, test, key)])
    then = f"Sprint {earlier['sprint']}, Day {earlier['day']}"
    text = table(["Key result", then, "Today", "Change"], rows)
    notes = verdicts(tests)
    return text + ("\n\n" + "\n".join(f"- {line}" for line in notes) if notes else "")


def day_test(then_files, now_files, key: str, phase: str, settings) -> dict | None:
    """The paired test of today's predictions against the earlier day's; None if untried."""
    before, after = then_files.get(key, {}).get(phase), now_files.get(key, {}).get(phase)
    if before is None and after is None:
        return None
    if before == after:
        return {"same_run": True}  # the same run both days: nothing to test
    return paired_test(
        read_predictions(before), read_predictions(after), ("then", "today"), settings
    )


# --- other tables ----------------------------------------------------------------------


def compare_modes(modes: dict[str, dict[str, RunFiles]]) -> str:
    """Image-only, fusion and ROI runs side by side: best val accuracy per phase, test accuracy."""
    names = list(modes)

    def value(mode: str, stage: str, key: str):
        run = modes[mode].get(stage)
        if run is None:
            return "—"
        found = run.metrics.get(key) if stage == "evaluate" else best(run, key)
        if found is None:
            return "—"
        # Each number with its interval, as in the key results.
        if stage == "evaluate":
            return with_interval(found, evaluate_accuracy_interval(run))
        if key == "val_accuracy":
            return with_interval(found, accuracy_interval(found, run.summary.get("val_size")))
        return with_interval(found, val_macro_f1_interval(run))

    splits = {r["evaluate"].metrics.get("split", "test") for r in modes.values() if "evaluate" in r}
    rows = [
        ["Best val accuracy (phase1)", *(value(m, "phase1", "val_accuracy") for m in names)],
        ["Best val macro-F1 (phase1)", *(value(m, "phase1", "val_macro_f1") for m in names)],
        ["Best val accuracy (phase2)", *(value(m, "phase2", "val_accuracy") for m in names)],
        [
            f"Accuracy ({'/'.join(sorted(splits)) or 'test'}, evaluate)",
            *(value(m, "evaluate", "accuracy") for m in names),
        ],
        [
            "Inputs besides the image",
            *(
                ", ".join(
                    next((r.summary.get("side_inputs") for r in modes[m].values() if r.summary), [])
                    or []
                )
                or "—"
                for m in names
            ),
        ],
    ]
    return table(["", *names], rows)


def model_summary(runs, phases) -> str:
    s = {p: runs[p].summary for p in phases}
    rows = [
        ["Backbone", *(f"`{s[p].get('backbone', '?')}`" for p in phases)],
        ["Classes", *(s[p].get("num_classes") for p in phases)],
        [
            "Input → resize (px)",
            *(f"{num(s[p].get('input_size'))} → {num(s[p].get('image_size'))}" for p in phases),
        ],
        ["Total parameters", *(s[p].get("total_params") for p in phases)],
        ["Trainable parameters", *(s[p].get("trainable_params") for p in phases)],
        ["Non-trainable parameters", *(s[p].get("non_trainable_params") for p in phases)],
        ["Features cached", *(num(bool(s[p].get("feature_cached"))) for p in phases)],
    ]
    return table(["", *phases], rows)


def per_class_table(metrics: dict[str, Any]) -> str:
    rows = [
        [name, m["precision"], m["recall"], m["f1"], m["support"]]
        for name, m in metrics["per_class"].items()
    ]
    return table(["Class", "Precision", "Recall", "F1", "Support"], rows)
