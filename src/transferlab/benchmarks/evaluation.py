"""Evaluation and folder-scan benchmarks: memory that does not grow with the split, scan once.

``evaluate_memory`` runs ``evaluate`` (two TTA copies) on N and 4N images, each in a
fresh process so its peak resident memory is its own, and times a TTA copy against the
plain pass on the same split. ``scan_speed`` scans a folder of many
files twice: the first scan decodes every file, the second reads the kept scan.
"""

from __future__ import annotations

import time
from pathlib import Path

from transferlab.benchmarks.pipeline import in_fresh_processes, peak_rss_mb, write_synthetic_folder
from transferlab.benchmarks.timing import figure
from transferlab.config import Config

# TTA copies per image in the evaluation benchmark (eval.tta).
TTA_PASSES = 2


def evaluate_folder(settings: dict) -> dict:
    """Save an untrained model of ``settings``' config and evaluate it on the whole folder.

    ``settings``: the config overrides (a dict), with the folder as ``data.data_dir``.
    Returns the images scored, the seconds ``evaluate`` took and this process's peak memory,
    then the seconds of a plain pass and of ``eval.tta`` TTA copies over the same split,
    timed apart (both after ``evaluate``, so both read the decoded images it kept).
    """
    import keras

    from transferlab.config import load_config
    from transferlab.data import load_dataset
    from transferlab.data.splits import prepare_splits
    from transferlab.evaluation import evaluate
    from transferlab.evaluation.inference import predict_dataset, split_batches
    from transferlab.evaluation.tta import tta_probabilities
    from transferlab.models import build_model, load_model
    from transferlab.runs import best_model_path

    cfg = load_config(None, settings)
    dataset = load_dataset(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, dataset.num_classes, cfg.data.input_size or cfg.model.image_size)
    path = best_model_path(cfg, "phase1")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    started = time.perf_counter()
    result = evaluate(cfg, model_path=path)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()

    model = load_model(path)
    table = prepare_splits(cfg, dataset)[cfg.eval.split]
    batches = split_batches(model, cfg, dataset, table)
    model.predict(batches.take(1), verbose=0)  # tracing, untimed
    started = time.perf_counter()
    plain = predict_dataset(model, batches, len(table), "plain")
    plain_s = time.perf_counter() - started
    tta_probabilities(model, batches, len(table), cfg.eval.tta, cfg.seed, plain=plain)
    copies_s = time.perf_counter() - started - plain_s
    return {
        "images": result.metrics["num_samples"],
        "seconds": seconds,
        "max_rss_mb": peak,
        "plain_s": plain_s,
        "tta_copies_s": copies_s,
    }


def evaluate_memory(cfg: Config, work_dir: Path) -> dict:
    """Peak resident memory and time per image of ``evaluate`` (TTA on) at N and 4N images.

    Also, at each size: a TTA copy's time per image against the plain pass's, same split,
    same process (goal: within 1.15x).
    """
    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    counts = (bench.eval_images, 4 * bench.eval_images)
    calls = []
    for count in counts:
        root = write_synthetic_folder(work_dir / f"eval{count}", count, bench.file_size, classes=2)
        settings = {
            "experiment": f"bench_eval{count}",
            "output_dir": str(work_dir / f"eval{count}_outputs"),
            "models_dir": str(work_dir / f"eval{count}_models"),
            "data.kind": "folder",
            "data.data_dir": str(root),
            # Most of the folder in the evaluated split, as in the 10/10/80 case it answers.
            "data.splits": [0.1, 0.1, 0.8],
            "data.input_size": input_size,
            "model.backbone": cfg.model.backbone,
            "model.image_size": cfg.model.image_size,
            "model.weights": "none",
            "train.batch_size": bench.batch_size,
            "eval.split": "test",
            "eval.tta": TTA_PASSES,
        }
        calls.append((settings,))
    runs = in_fresh_processes("transferlab.benchmarks.evaluation:evaluate_folder", calls)
    figures, tta = [], []
    for count, run in zip(counts, runs, strict=True):
        per_image = run["seconds"] / run["images"] * 1e3
        figures.append(
            figure(
                "ms_per_image",
                "ms/image",
                [per_image],
                folder_images=count,
                images=run["images"],
                max_rss_mb=run["max_rss_mb"],
            )
        )
        plain = run["plain_s"] / run["images"] * 1e3
        copy = run["tta_copies_s"] / (TTA_PASSES * run["images"]) * 1e3
        ratio = copy / plain
        tta.append(
            {
                "images": run["images"],
                "plain_ms_per_image": plain,
                "copy_ms_per_image": copy,
                "ratio": ratio,
                "goal": 1.15,
                "goal_met": ratio <= 1.15,
            }
        )
    small, large = figures
    growth = large["max_rss_mb"] / small["max_rss_mb"]
    return {
        "benchmark": "evaluate_memory",
        "backbone": cfg.model.backbone,
        "input_size": input_size,
        "tta_passes": TTA_PASSES,
        "memory_growth": growth,
        "goal": 1.2,
        "goal_met": growth <= 1.2,
        "tta_speed": tta,
        "figures": figures,
    }


def scan_speed(cfg: Config, work_dir: Path) -> dict:
    """The first scan of a folder of ``bench.scan_files`` JPEGs against the second."""
    from transferlab.config import load_config
    from transferlab.data import load_dataset

    count = cfg.bench.scan_files
    root = write_synthetic_folder(work_dir / "scan", count, 16)
    scan_cfg = load_config(
        None,
        {
            "output_dir": str(work_dir / "scan_outputs"),
            "data.kind": "folder",
            "data.data_dir": str(root),
        },
    )
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        dataset = load_dataset(scan_cfg)
        seconds.append(time.perf_counter() - started)
    first, second = seconds
    return {
        "benchmark": "scan_speed",
        "files": count,
        "usable": len(dataset.table),
        "speedup": first / second,
        "goal": 10.0,
        "goal_met": first / second >= 10.0,
        "figures": [
            figure("first_scan", "s", [first], files=count),
            figure("second_scan", "s", [second], files=count),
        ],
    }
