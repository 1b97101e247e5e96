"""Benchmarks behind `make bench`: measured speed, against the naive pipeline and the hardware.

1. ``frozen_phase``: feature-cached phase 1 against end-to-end frozen training.
2. ``hardware_limit``: the measured float32 matmul peak against the model's forward and
   training steps, through the model's own (counted) FLOPs.
3. ``pipeline_scaling``: a folder streamed from disk at N, 2N, 4N images, each size in its
   own process so its peak resident memory is its own.
4. ``pipeline_overhead``: the input pipeline alone against the model step alone.
5. ``evaluate_memory``: ``evaluate`` (TTA on) at N and 4N images, each in its own process:
   peak memory must not grow with the split.
6. ``scan_speed``: the first and second scan of a folder of many files.
7. ``lr_find_speed``: the phase-1 learning-rate finder (`make lr-find`) on cached features.
8. ``sweep_speed``: a whole `make sweep` (features computed once, every trial's head trained
   on them) against one end-to-end phase 1 of the same epochs.
9. ``health_speed``: the near-duplicate search at N and 4N images (time per 10,000, growth,
   planted-pair recall) and label-error precision/recall with 5% flipped digits labels.
10. ``decode_speed``: 1920x1080 JPEGs decoded and resized by 1 and 2 workers, the project's
   reader and the export's graph-native decode.
11. ``phase2_cached``: phase 2 from conv5 per epoch, conv4's output cached against end to
   end, beside the limit the prefix's FLOPs allow.

Every benchmark returns a dict with ``figures``: rows of median, min and max over
``bench.repeats`` timed runs. Model timing uses Keras APIs only (``predict_on_batch``,
``train_on_batch``, ``keras.ops``), so the same code runs under ``KERAS_BACKEND=jax``.
No benchmark downloads anything: weights are random ("none") and images synthetic.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from transferlab.benchmarks.evaluation import evaluate_memory, scan_speed
from transferlab.benchmarks.freeze_once import phase2_cached
from transferlab.benchmarks.frozen import frozen_phase
from transferlab.benchmarks.hardware import count_flops, hardware_limit, matmul_peak, model_speed
from transferlab.benchmarks.health import health_speed
from transferlab.benchmarks.lr_find import lr_find_speed
from transferlab.benchmarks.pipeline import (
    decode_speed,
    pipeline_overhead,
    pipeline_scaling,
    stream_folder,
)
from transferlab.benchmarks.sweep import sweep_speed
from transferlab.benchmarks.timing import machine_info
from transferlab.config import Config

__all__ = [
    "count_flops",
    "matmul_peak",
    "model_speed",
    "run_benchmarks",
    "stream_folder",
]


def save_result(result: dict, out_dir: Path) -> Path:
    """``<name>.json`` (everything) and ``<name>.csv`` (one row per figure) in ``out_dir``."""
    import pandas as pd

    from transferlab.runs import write_json, write_with

    name = result["benchmark"]
    write_json(out_dir / f"{name}.json", result)
    rows = [
        {**row, "runs": ";".join(f"{v:.6g}" for v in row["runs"])} if "runs" in row else row
        for row in result["figures"]
    ]
    return write_with(out_dir / f"{name}.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))


def run_benchmarks(cfg: Config) -> str:
    """The `make bench` stage: all ten benchmarks, their files and the summary table."""
    from transferlab.benchmarks.report import write_summary

    out_dir = Path(cfg.output_dir) / "bench"
    machine = machine_info()
    params = {"bench": dict(vars(cfg.bench)), "model": dict(vars(cfg.model))}
    results = []
    started = time.perf_counter()

    def keep(result: dict) -> dict:
        # Seconds since the previous benchmark ended: the defaults' 10-minute budget.
        nonlocal started
        now = time.perf_counter()
        result.update(machine=machine, params=params, wall_s=round(now - started, 3))
        started = now
        save_result(result, out_dir)
        print(f"[transferlab] bench: {result['benchmark']} done", flush=True)
        results.append(result)
        return result

    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        work = Path(tmp)
        keep(pipeline_scaling(cfg, work))
        hardware = keep(hardware_limit(cfg))
        size = cfg.data.input_size or cfg.model.image_size
        rows = [r for r in hardware["figures"] if r.get("size") == size and "batch_size" in r]
        speed = {"figures": rows} if len(rows) == 2 else None
        keep(pipeline_overhead(cfg, work / f"n{cfg.bench.pipeline_images}", speed))
        frozen = keep(frozen_phase(cfg, work))
        if cfg.bench.phase2_epochs:
            keep(phase2_cached(cfg, work))
        keep(evaluate_memory(cfg, work))
        keep(scan_speed(cfg, work))
        keep(lr_find_speed(cfg, work))
        keep(sweep_speed(cfg, work, frozen))
        keep(health_speed(cfg))
        keep(decode_speed(cfg, work))
    summary = write_summary(results, machine, Path(cfg.bench.summary))
    return f"results in {out_dir}, summary in {summary}"
