"""The day-checkpoint report: what was done, what the runs measured, what comes next.

Everything measured comes from run files (summary.json, metrics.csv, metrics.json,
predictions.csv, figures, the splits' balance.json, audit.json and skipped.csv, and the
key results an earlier day's report saved); what only a person knows (completed tasks,
decisions, next priorities, notes) comes from the YAML journal ``report.journal`` or
from parameters. No clock is read: the date is a parameter, the journal's, or the
newest run's timestamp, so regenerating gives the same file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from transferlab.config import Config, ConfigError
from transferlab.reports.markdown import bullets, copy_figure, link, num, seconds, table
from transferlab.reports.results import (
    best,
    compare_modes,
    earlier_snapshot,
    key_results,
    key_values,
    model_summary,
    per_class_table,
    prediction_files,
    progress_table,
    write_snapshot,
)
from transferlab.reports.rules import (
    VERDICT_ORDER,
    Diagnosis,
    Finding,
    check_collapse,
    check_evaluation,
    finite,
    gap_to_target,
    monitored,
    priority,
)
from transferlab.reports.runfiles import PHASES, RunFiles, read_run
from transferlab.reports.splits import data_findings, data_section, read_splits_files
from transferlab.reports.training import run_diagnosis, write_training_report
from transferlab.runs import find_runs, read_json, write_text

EVAL_FIGURES = {
    "confusion_matrix_normalized.png": "Confusion matrix (normalized)",
    "confusion_matrix.png": "Confusion matrix (counts)",
    "roc_curves.png": "ROC curves",
    "prediction_grid.png": "Prediction grid",
    "confident_mistakes.png": "Most confident mistakes",
}
MAX_PRIORITIES = 5


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
    journal's, then to the newest run's timestamp. Next priorities default to the next
    steps of the runs' verdicts.
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
    splits = read_splits_files(cfg)
    diagnoses = phase_diagnoses(runs, phases)
    values = key_values(runs, phases, test_phase)
    earlier = earlier_snapshot(out, cfg.experiment, rc.sprint, rc.day)
    predictions = prediction_files(runs, phases, test_phase)
    write_snapshot(files, cfg.experiment, rc.sprint, rc.day, values, predictions)

    sections = [
        f"# {rc.project} — Sprint {rc.sprint}, Day {rc.day} checkpoint",
        "",
        f"**Date:** {date} · **Experiment:** `{cfg.experiment}`",
        "",
        verdicts_line(diagnoses),
        "",
        "## Completed tasks",
        "",
        bullets(completed if completed is not None else journal.get("completed", [])),
        "",
        "## Data",
        "",
        data_section(cfg, splits, class_names(runs, phases)),
        "",
        "## Key results",
        "",
        key_results(runs, phases, test_phase, values),
        "",
    ]
    if earlier:
        sections += [
            f"## Progress since Sprint {earlier['sprint']}, Day {earlier['day']}",
            "",
            progress_table(earlier, values, predictions, paired_settings(cfg)),
            "",
        ]
    modes = mode_runs(cfg)
    if len(modes) > 1:
        sections += ["## Input modes compared", "", compare_modes(modes), ""]
    sections += [
        "## Key outputs",
        "",
        key_outputs(cfg, runs, phases, training_reports, files, out),
        "",
    ]
    if "gradcam" in runs:
        sections += ["## Grad-CAM", "", gradcam_section(runs["gradcam"], files, out), ""]
    sections += ["## Model summary", "", model_summary(runs, phases), ""]
    if evaluation and evaluation.metrics.get("per_class"):
        sections += [f"## Per-class results ({evaluation.metrics.get('split', '?')} split)", ""]
        sections += [per_class_table(evaluation.metrics), ""]
    sections += [
        "## Decisions",
        "",
        decisions_markdown(decisions or journal.get("decisions", [])),
        "",
    ]
    findings = observations(diagnoses, data_findings(splits), evaluation)
    sections += ["## Observations", "", bullets([observed(f) for f in findings]), ""]
    gap = target_finding(cfg, runs, phases, test_phase)
    sections += [
        "## Gap analysis",
        "",
        f"{gap.message}." if gap else "_no accuracy measured yet_",
        "",
    ]
    priorities = next_priorities if next_priorities is not None else journal.get("next", [])
    if not priorities:
        priorities = suggested_priorities(diagnoses, [*findings, *([gap] if gap else [])])
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


def paired_settings(cfg: Config) -> dict[str, Any]:
    """How the report's paired tests run: compare.alpha, eval's confidence and resamples."""
    return {
        "alpha": cfg.compare.alpha,
        "confidence": cfg.eval.confidence,
        "resamples": cfg.eval.bootstrap,
        "seed": cfg.seed,
    }


def phase_evaluated(evaluation: RunFiles, runs: dict[str, RunFiles]) -> str | None:
    """The phase whose best model the evaluate run measured."""
    model = evaluation.metrics.get("model_path", "")
    for phase in PHASES:
        if phase in runs and runs[phase].summary.get("model_path") == model:
            return phase
    return next((p for p in PHASES if f"_{p}_" in Path(model).name), None)


def class_names(runs: dict[str, RunFiles], phases) -> list[str]:
    return next(
        (runs[p].summary["class_names"] for p in phases if runs[p].summary.get("class_names")), []
    )


# --- verdicts, observations, priorities ------------------------------------------------


def phase_diagnoses(runs: dict[str, RunFiles], phases) -> dict[str, Diagnosis]:
    """Each phase run's diagnosis; phase 2's is measured against phase 1's best too."""
    diagnoses = {}
    for phase in phases:
        run = runs[phase]
        if run.history is None or run.history.empty:
            continue
        phase1_best = None
        if phase == "phase2" and "phase1" in runs:
            column = monitored(run.history, run.summary.get("monitor"))
            phase1_best = finite(best(runs["phase1"], column))
        diagnoses[phase] = run_diagnosis(run, phase1_best)
    return diagnoses


def verdicts_line(diagnoses: dict[str, Diagnosis]) -> str:
    if not diagnoses:
        return "**Verdict:** _no training history yet_"
    return "**Verdict:** " + " · ".join(f"{p}: {d.verdict}" for p, d in diagnoses.items())


def observations(
    diagnoses: dict[str, Diagnosis], data: list[Finding], evaluation: RunFiles | None
) -> list[Finding]:
    """Every finding once, most severe and most actionable first.

    A finding two phases share (the same validation set's size) is listed once for both.
    """
    shared: dict[tuple[str, str], Finding] = {}
    for phase, diagnosis in diagnoses.items():
        for f in diagnosis.findings:
            key = (f.rule, f.message)
            where = f"{shared[key].where} and {phase}" if key in shared else phase
            shared[key] = replace(f, where=where)
    findings = [*shared.values(), *data]
    if evaluation is not None:
        split = evaluation.metrics.get("split", "test")
        findings += [
            replace(f, where=f"evaluate ({split})") for f in check_evaluation(evaluation.metrics)
        ]
        if evaluation.predictions is not None:
            findings += [
                replace(f, where=f"evaluate ({split})")
                for f in check_collapse(evaluation.predictions, split)
            ]
    return sorted(findings, key=priority)


def observed(finding: Finding) -> str:
    return f"{finding.where}: {finding.message}." if finding.where else f"{finding.message}."


def suggested_priorities(diagnoses: dict[str, Diagnosis], findings: list[Finding]) -> list[str]:
    """Next steps from the verdicts first, then from the other findings; each step once."""
    headlines = {(p, d.headline.rule) for p, d in diagnoses.items() if d.headline}
    names = dict(VERDICT_ORDER)

    def order(f: Finding):
        return (f.where, f.rule) not in headlines, priority(f)

    steps: dict[str, str] = {}
    for f in sorted(findings, key=order):
        if f.action and f.action not in steps:
            title = names.get(f.rule, f.rule.replace("_", " "))
            where = f" ({f.where})" if f.where else ""
            steps[f.action] = f"**{title}**{where}: {f.action}"
    return list(steps.values())[:MAX_PRIORITIES]


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


# --- figures ---------------------------------------------------------------------------


def key_outputs(cfg: Config, runs, phases, training_reports, files: Path, out: Path) -> str:
    rows, images = [], []
    histories = {p: runs[p].history for p in phases if runs[p].history is not None}
    if len(histories) == 2:
        # Imported here: the training package loads TensorFlow, which the rest of a report
        # does not need.
        from transferlab.training.curves import plot_phases

        # Phase 1 and phase 2 on one epoch axis: how fine-tuning continued from phase 1.
        both = plot_phases(
            files / "training_curves_phases.png",
            {p: h.to_dict("records") for p, h in histories.items()},
            f"{cfg.experiment}: phase 1 → phase 2",
        )
        rows.append(["Training curves (phase 1 → phase 2)", f"[{both.name}]({link(both, out)})"])
        images.append(f"![Training curves (phase 1 → phase 2)]({link(both, out)})")
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
        if run.summary.get("kept_phase1"):
            # Phase 2 never beat phase 1: it wrote no model of its own.
            rows.append([f"Best model ({phase})", "none: phase 1's model stays the best"])
        elif run.summary.get("model_path"):
            rows.append([f"Best model ({phase})", f"`{run.summary['model_path']}`"])
        rows.append([f"Run directory ({phase})", f"`{run.path}`"])
    run = runs.get("evaluate")
    if run:
        # Evaluation figures in reading order.
        for name, title in EVAL_FIGURES.items():
            figure = run.path / "figures" / name
            if figure.is_file():
                copied = copy_figure(figure, files, f"evaluate_{name}")
                rows.append([title, f"[{copied.name}]({link(copied, out)})"])
                images.append(f"![{title}]({link(copied, out)})")
        rows.append(["Run directory (evaluate)", f"`{run.path}`"])
    return table(["Output", "Path"], rows) + ("\n\n" + "\n\n".join(images) if images else "")


def gradcam_section(run: RunFiles, files: Path, out: Path) -> str:
    """The Grad-CAM run's figures, with the layer, model and split they come from."""
    s = run.summary
    lines = []
    if s:
        lines += [
            f"Layer `{s.get('layer_name', '?')}` of `{s.get('model_path', '?')}`, on the "
            f"{s.get('split', '?')} split ({num(s.get('num_images'))} images); "
            f"run directory `{run.path}`.",
            "",
        ]
    for figure in run.figures:
        title = f"Grad-CAM: {figure.stem.replace('gradcam_', '').replace('_', ' ')}"
        name = figure.name if figure.name.startswith("gradcam") else f"gradcam_{figure.name}"
        copied = copy_figure(figure, files, name)
        lines += [f"![{title}]({link(copied, out)})", ""]
    return "\n".join(lines).rstrip() or "_the Grad-CAM run holds no figures_"


# --- other sections --------------------------------------------------------------------


def mode_runs(cfg: Config) -> dict[str, dict[str, RunFiles]]:
    """The newest phase1, phase2 and evaluate run of each model.inputs of the experiment."""
    modes: dict[str, dict[str, Path]] = {}
    for stage in (*PHASES, "evaluate"):
        for path in find_runs(cfg.output_dir, cfg.experiment, stage):  # oldest first
            modes.setdefault(run_mode(path), {})[stage] = path
    order = ["image", "fusion", "roi"]
    return {
        mode: {stage: read_run(path) for stage, path in modes[mode].items()}
        for mode in sorted(modes, key=lambda m: order.index(m) if m in order else len(order))
    }


def decisions_markdown(decisions: list[dict[str, str]]) -> str:
    lines = []
    for d in decisions:
        reason = d.get("reason") or d.get("why")
        text = d.get("decision") or d.get("title") or ""
        lines.append(
            f"**{d.get('id', 'DEC-?')}**: {text}" + (f" *Why:* {reason}" if reason else "")
        )
    return bullets(lines)


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
