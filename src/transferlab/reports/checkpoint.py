"""The day-checkpoint report: what was done, what the runs measured, what comes next.

Everything measured comes from run files (summary.json, metrics.csv, metrics.json,
figures, the splits' balance.json and audit.json); what only a person knows
(completed tasks, decisions, next priorities, notes) comes from the YAML journal
``report.journal`` or from parameters. No clock is read: the date is a parameter,
the journal's, or the newest run's timestamp, so regenerating gives the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from transferlab.config import Config, ConfigError
from transferlab.reports.markdown import bullets, copy_figure, link, num, seconds, table
from transferlab.reports.rules import (
    SEVERITY_ORDER,
    Finding,
    check_class_balance,
    check_evaluation,
    check_leakage,
    gap_to_target,
)
from transferlab.reports.runfiles import RunFiles, read_run
from transferlab.reports.training import run_diagnosis, write_training_report
from transferlab.runs import find_runs, read_json, write_text

PHASES = ("phase1", "phase2")
EVAL_FIGURES = {
    "confusion_matrix_normalized.png": "Confusion matrix (normalized)",
    "confusion_matrix.png": "Confusion matrix (counts)",
    "roc_curves.png": "ROC curves",
    "prediction_grid.png": "Prediction grid",
    "confident_mistakes.png": "Most confident mistakes",
}


def read_journal(path: str | Path | None, sprint: int, day: int) -> dict[str, Any]:
    """The journal entry for this sprint and day (a ``days:`` list), or the whole file."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report.journal={path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"journal {path} must hold a mapping (completed, decisions, next, notes)")
    if "days" in data:
        matches = [d for d in data["days"] if d.get("sprint") == sprint and d.get("day") == day]
        return matches[-1] if matches else {}
    return data


def run_mode(path: Path) -> str:
    """The model.inputs a run was made with (runs from before the setting: image)."""
    config = path / "config.json"
    return (
        read_json(config).get("model", {}).get("inputs", "image") if config.is_file() else "image"
    )


def latest_runs(cfg: Config) -> dict[str, RunFiles]:
    """The newest run of each stage that exists: phase1, phase2, evaluate, gradcam.

    Runs with the config's model.inputs come first; other modes only fill in when the
    experiment has none of this mode (they are compared in their own section).
    """
    runs = {}
    everything = {s: find_runs(cfg.output_dir, cfg.experiment, s) for s in (*PHASES, "evaluate")}
    everything["gradcam"] = find_runs(cfg.output_dir, cfg.experiment, "gradcam")
    mine = {
        s: [p for p in found if run_mode(p) == cfg.model.inputs] for s, found in everything.items()
    }
    if any(mine[p] for p in PHASES):
        everything = mine
    for stage in (*PHASES, "evaluate", "gradcam"):
        found = everything[stage]
        if found:
            runs[stage] = read_run(found[-1])
    if not any(p in runs for p in PHASES):
        raise FileNotFoundError(
            f"no training run of experiment {cfg.experiment!r} under "
            f"{Path(cfg.output_dir) / 'runs'}; "
            "run `make train-phase1` with the same CONFIG first"
        )
    return runs


def day_checkpoint_path(cfg: Config) -> Path:
    """Where ``write_day_checkpoint`` writes this sprint and day's report."""
    return Path(cfg.report.output_dir) / f"sprint{cfg.report.sprint:02d}_day{cfg.report.day:02d}.md"


def write_day_checkpoint(
    cfg: Config,
    date: str | None = None,
    completed: list[str] | None = None,
    decisions: list[dict[str, str]] | None = None,
    next_priorities: list[str] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write ``<report.output_dir>/sprint<S>_day<D>.md`` and a training report per phase run.

    Parameters win over the journal (``cfg.report.journal``); the date defaults to the
    journal's, then to the newest run's timestamp.
    """
    rc = cfg.report
    journal = read_journal(rc.journal, rc.sprint, rc.day)
    runs = latest_runs(cfg)
    date = date or journal.get("date") or max(r.date or "" for r in runs.values()) or "undated"
    out = Path(rc.output_dir)
    stem = day_checkpoint_path(cfg).stem
    files = out / f"{stem}_files"
    training_reports = {
        p: write_training_report(runs[p].path, out)
        for p in PHASES
        if p in runs and runs[p].history is not None
    }
    phases = [p for p in PHASES if p in runs]
    evaluation = runs.get("evaluate")
    test_phase = phase_evaluated(evaluation, runs) if evaluation else None

    sections = [
        f"# {rc.project} — Sprint {rc.sprint}, Day {rc.day} checkpoint",
        "",
        f"**Date:** {date} · **Experiment:** `{cfg.experiment}`",
        "",
        "## Completed tasks",
        "",
        bullets(completed if completed is not None else journal.get("completed", [])),
        "",
        "## Key results",
        "",
        key_results(runs, phases, test_phase),
        "",
    ]
    modes = mode_runs(cfg)
    if len(modes) > 1:
        sections += ["## Input modes compared", "", compare_modes(modes), ""]
    sections += [
        "## Key outputs",
        "",
        key_outputs(runs, phases, training_reports, files, out),
        "",
        "## Model summary",
        "",
        model_summary(runs, phases),
        "",
    ]
    if evaluation and evaluation.metrics.get("per_class"):
        sections += [f"## Per-class results ({evaluation.metrics.get('split', '?')} split)", ""]
        sections += [per_class_table(evaluation.metrics), ""]
    sections += [
        "## Decisions",
        "",
        decisions_markdown(decisions or journal.get("decisions", [])),
        "",
    ]
    findings = observations(cfg, runs, phases)
    sections += ["## Observations", "", bullets([f"{f.message}." for f in findings]), ""]
    gap = target_finding(cfg, runs, phases, test_phase)
    sections += [
        "## Gap analysis",
        "",
        f"{gap.message}." if gap else "_no accuracy measured yet_",
        "",
    ]
    priorities = next_priorities if next_priorities is not None else journal.get("next", [])
    if not priorities:
        # Suggested by the rules, most severe first, each action once.
        priorities = list(
            dict.fromkeys(f.action for f in [*findings, *([gap] if gap else [])] if f.action)
        )
    sections += [
        "## Next priorities",
        "",
        "\n".join(f"{i}. {p}" for i, p in enumerate(priorities, 1)) or "_none_",
        "",
    ]
    sections += [
        "## Notes",
        "",
        bullets(run_notes(runs, phases) + list(notes or journal.get("notes", []))),
        "",
    ]
    return write_text(out / f"{stem}.md", "\n".join(sections))


def phase_evaluated(evaluation: RunFiles, runs: dict[str, RunFiles]) -> str | None:
    """The phase whose best model the evaluate run measured."""
    model = evaluation.metrics.get("model_path", "")
    for phase in PHASES:
        if phase in runs and runs[phase].summary.get("model_path") == model:
            return phase
    return next((p for p in PHASES if f"_{p}_" in Path(model).name), None)


def best(run: RunFiles, key: str):
    value = run.summary.get("best_metrics", {}).get(key)
    if (
        value is None
        and run.history is not None
        and key in run.history
        and run.summary.get("best_epoch")
    ):
        row = run.history[run.history["epoch"] == run.summary["best_epoch"]]
        value = row[key].iloc[0] if len(row) else None
    return value


def key_results(runs, phases, test_phase) -> str:
    evaluation = runs.get("evaluate")
    test = {p: "—" for p in phases}
    if test_phase in test:
        test[test_phase] = evaluation.metrics["accuracy"]
    rows = [
        ["Best val accuracy", *(best(runs[p], "val_accuracy") for p in phases)],
        ["Best val macro-F1", *(best(runs[p], "val_macro_f1") for p in phases)],
        [
            f"Test accuracy ({evaluation.metrics.get('split', 'test')})"
            if evaluation
            else "Test accuracy",
            *(test[p] for p in phases),
        ],
        ["Training time", *(seconds(runs[p].summary.get("wall_time_s")) for p in phases)],
        ["Epochs run", *(runs[p].summary.get("epochs_run") for p in phases)],
        ["Best epoch", *(runs[p].summary.get("best_epoch") for p in phases)],
        ["Stop reason", *(str(runs[p].summary.get("stop_reason", "—")) for p in phases)],
    ]
    return table(["", *phases], rows)


def mode_runs(cfg: Config) -> dict[str, dict[str, RunFiles]]:
    """The newest phase1, phase2 and evaluate run of each model.inputs of the experiment."""
    modes: dict[str, dict[str, RunFiles]] = {}
    for stage in (*PHASES, "evaluate"):
        for path in find_runs(cfg.output_dir, cfg.experiment, stage):  # oldest first
            modes.setdefault(run_mode(path), {})[stage] = path
    order = ["image", "fusion", "roi"]
    return {
        mode: {stage: read_run(path) for stage, path in modes[mode].items()}
        for mode in sorted(modes, key=lambda m: order.index(m) if m in order else len(order))
    }


def compare_modes(modes: dict[str, dict[str, RunFiles]]) -> str:
    """Image-only, fusion and ROI runs side by side: best val accuracy per phase, test accuracy."""
    names = list(modes)

    def value(mode: str, stage: str, key: str):
        run = modes[mode].get(stage)
        if run is None:
            return "—"
        found = run.metrics.get(key) if stage == "evaluate" else best(run, key)
        return "—" if found is None else found

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


def key_outputs(runs, phases, training_reports, files: Path, out: Path) -> str:
    rows, images = [], []
    for phase in phases:
        run = runs[phase]
        curves = run.path / "figures" / "training_curves.png"
        if curves.is_file():
            copied = copy_figure(curves, files, f"{phase}_training_curves.png")
            rows.append([f"Training curves ({phase})", f"[{copied.name}]({link(copied, out)})"])
            images.append(f"![Training curves ({phase})]({link(copied, out)})")
        if phase in training_reports:
            report = training_reports[phase]
            rows.append([f"Training report ({phase})", f"[{report.name}]({link(report, out)})"])
        if run.summary.get("model_path"):
            rows.append([f"Best model ({phase})", f"`{run.summary['model_path']}`"])
        rows.append([f"Run directory ({phase})", f"`{run.path}`"])
    for stage, names in (("evaluate", EVAL_FIGURES), ("gradcam", None)):
        run = runs.get(stage)
        if not run:
            continue
        # Evaluation figures in reading order; Grad-CAM figures as they come.
        figures = [run.path / "figures" / n for n in names] if names else run.figures
        for figure in (f for f in figures if f.is_file()):
            title = (
                names[figure.name] if names else f"Grad-CAM: {figure.stem.replace('gradcam_', '')}"
            )
            target = figure.name if figure.name.startswith(stage) else f"{stage}_{figure.name}"
            copied = copy_figure(figure, files, target)
            rows.append([title, f"[{copied.name}]({link(copied, out)})"])
            images.append(f"![{title}]({link(copied, out)})")
        rows.append([f"Run directory ({stage})", f"`{run.path}`"])
    return table(["Output", "Path"], rows) + ("\n\n" + "\n\n".join(images) if images else "")


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


def decisions_markdown(decisions: list[dict[str, str]]) -> str:
    lines = []
    for d in decisions:
        reason = d.get("reason") or d.get("why")
        text = d.get("decision") or d.get("title") or ""
        lines.append(
            f"**{d.get('id', 'DEC-?')}**: {text}" + (f" *Why:* {reason}" if reason else "")
        )
    return bullets(lines)


def observations(cfg: Config, runs, phases) -> list[Finding]:
    findings: list[Finding] = []
    for phase in phases:
        if runs[phase].history is None:
            continue
        diagnosis = run_diagnosis(runs[phase])
        for f in diagnosis.findings:
            findings.append(
                Finding(f.rule, f.severity, f"{phase}: {f.message}", f.action, f.evidence)
            )
    splits = Path(cfg.output_dir) / "splits" / cfg.dataset_name
    if (splits / "balance.json").is_file():
        findings += check_class_balance(read_json(splits / "balance.json"))
    if (splits / "audit.json").is_file():
        findings += check_leakage(read_json(splits / "audit.json"))
    if "evaluate" in runs:
        findings += check_evaluation(runs["evaluate"].metrics)
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])


def target_finding(cfg: Config, runs, phases, test_phase) -> Finding | None:
    """Gap to the target: test accuracy when evaluated, else the best val accuracy."""
    if test_phase:
        metrics = runs["evaluate"].metrics
        return gap_to_target(
            metrics["accuracy"],
            cfg.report.target_accuracy,
            f"{metrics.get('split', 'test')} accuracy ({test_phase})",
        )
    measured = [
        (best(runs[p], "val_accuracy"), p)
        for p in phases
        if best(runs[p], "val_accuracy") is not None
    ]
    if not measured:
        return None
    value, phase = max(measured)
    return gap_to_target(value, cfg.report.target_accuracy, f"best val accuracy ({phase})")


def run_notes(runs, phases) -> list[str]:
    notes = []
    for phase in phases:
        s = runs[phase].summary
        parts = []
        if s.get("device"):
            parts.append(f"device `{s['device']}`")
        if s.get("wall_time_s") is not None:
            parts.append(f"wall time {seconds(s['wall_time_s'])}")
        if s.get("best_epoch") is not None:
            parts.append(
                f"best epoch {num(s['best_epoch'])} of {num(s.get('epochs_run'))} restored"
            )
        versions = s.get("versions") or {}
        if versions:
            parts.append("versions " + ", ".join(f"`{k} {v}`" for k, v in sorted(versions.items())))
        if parts:
            notes.append(f"{phase}: " + "; ".join(parts))
    return notes
