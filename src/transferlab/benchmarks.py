"""Benchmarks behind `make bench`: measured speed, against the naive pipeline and the hardware.

1. ``frozen_phase``: feature-cached phase 1 against end-to-end frozen training.
2. ``hardware_limit``: the measured float32 matmul peak against the model's forward and
   training steps, through the model's own (counted) FLOPs.
3. ``pipeline_scaling``: a folder streamed from disk at N, 2N, 4N images, each size in its
   own process so its peak resident memory is its own.
4. ``pipeline_overhead``: the input pipeline alone against the model step alone.

Every benchmark returns a dict with ``figures``: rows of median, min and max over
``bench.repeats`` timed runs. Model timing uses Keras APIs only (``predict_on_batch``,
``train_on_batch``, ``keras.ops``), so the same code runs under ``KERAS_BACKEND=jax``.
No benchmark downloads anything: weights are random ("none") and images synthetic.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from transferlab.config import Config, load_config

# --- timing ------------------------------------------------------------------------


def time_runs(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls, after ``warmup`` untimed calls.

    The warm-up call pays for tracing and compiling, which a long run pays only once.
    """
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def figure(name: str, unit: str, values: list[float], **labels) -> dict:
    """One reported figure: median, min and max of ``values`` and the runs themselves."""
    return {
        "figure": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
        **labels,
    }


def rates(count: int, seconds: list[float]) -> list[float]:
    return [count / s for s in seconds]


# --- 2. hardware limit ---------------------------------------------------------------


def matmul_peak(sizes: list[int], repeats: int, dtype: str = "float32") -> dict:
    """Measured dense matmul FLOP/s: the median per size, and the best of those medians."""
    rows = []
    for n in sizes:
        a = keras.random.normal((n, n), dtype=dtype, seed=1)
        b = keras.random.normal((n, n), dtype=dtype, seed=2)

        def step(a=a, b=b):
            # Reading one element back waits for the product on asynchronous backends.
            return keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[:1, :1])

        rows.append(figure("matmul", "FLOP/s", rates(2 * n**3, time_runs(step, repeats)), size=n))
    best = max(rows, key=lambda r: r["median"])
    return {"peak_flops": best["median"], "peak_size": best["size"], "figures": rows}


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs per image of the kernel layers (Conv, DepthwiseConv, Dense), nested too.

    A kernel layer costs 2 FLOPs (multiply and add) per kernel weight per output position:
    Conv2D 2*H_out*W_out*k*k*C_in*C_out, Dense 2*in*out. Biases, BatchNorm, activations
    and pooling add under 1% to a ResNet and are left out.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
        elif getattr(layer, "kernel", None) is not None:
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += 2 * positions * int(np.prod(layer.kernel.shape))
    return total


def synthetic_batch(batch_size: int, size: int, num_classes: int, seed: int = 0):
    """Random 0..255 pixels (float32, as the model's input) and integer labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, size, size, 3)).astype("float32")
    return images, rng.integers(0, num_classes, batch_size).astype("int32")


def model_speed(cfg: Config, size: int, batch_size: int, repeats: int) -> dict:
    """Forward and training images/s of the configured model at ``size`` (input = model size).

    The training step trains the whole backbone (``unfreeze_from(model, "all")``, BatchNorm
    frozen as in phase 2): the most a training step can cost.
    """
    from transferlab.models import build_model, unfreeze_from

    bench_cfg = copy.deepcopy(cfg)
    bench_cfg.model.image_size = size
    bench_cfg.model.weights = "none"  # speed does not depend on the weights' values
    bench_cfg.model.augmentation = []
    num_classes = 10
    model = build_model(bench_cfg, num_classes, size)
    flops = count_flops(model)
    x, y = synthetic_batch(batch_size, size, num_classes)
    forward = rates(batch_size, time_runs(lambda: model.predict_on_batch(x), repeats))
    unfreeze_from(model, "all", cfg.model.backbone)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    train = rates(batch_size, time_runs(lambda: model.train_on_batch(x, y), repeats))
    labels = {"size": size, "batch_size": batch_size}
    return {
        "size": size,
        "forward_flops_per_image": flops,
        # Backward costs two forwards (input and weight gradients): 3x forward per image.
        "train_flops_per_image": 3 * flops,
        "figures": [
            figure("forward", "images/s", forward, **labels),
            figure("train_step", "images/s", train, **labels),
        ],
    }


def hardware_limit(cfg: Config, sizes: list[int] | None = None) -> dict:
    """Matmul peak, then forward and training speed at ``bench.model_sizes`` (224) and the
    configured ``model.image_size``, as images/s and as a fraction of the peak."""
    bench = cfg.bench
    peak = matmul_peak(bench.matmul_sizes, bench.repeats)
    sizes = sizes or sorted({*bench.model_sizes, cfg.model.image_size})
    figures = list(peak["figures"])
    for size in sizes:
        speed = model_speed(cfg, size, bench.batch_size, bench.repeats)
        for row, flops in zip(
            speed["figures"],
            (speed["forward_flops_per_image"], speed["train_flops_per_image"]),
            strict=True,
        ):
            row["flops_per_image"] = flops
            row["achieved_flops"] = row["median"] * flops
            row["fraction_of_peak"] = row["achieved_flops"] / peak["peak_flops"]
            figures.append(row)
    forward = [r for r in figures if r["figure"] == "forward"]
    return {
        "benchmark": "hardware_limit",
        "backbone": cfg.model.backbone,
        "peak_flops": peak["peak_flops"],
        "peak_size": peak["peak_size"],
        "goal": "forward >= 60% of the measured matmul peak",
        "goal_met": all(r["fraction_of_peak"] >= 0.6 for r in forward),
        "figures": figures,
    }


# --- 3. input pipeline ----------------------------------------------------------------


def write_synthetic_folder(
    root: Path, count: int, side: int, classes: int = 4, seed: int = 0
) -> Path:
    """``count`` random-noise JPEGs of side ``side`` in ``classes`` class sub-folders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photo; pure noise would make decoding unusually slow.
        small = rng.integers(0, 256, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.BILINEAR)
        image.save(folder / f"{i:06d}.jpg", quality=90)
    return root


def stream_folder(root: str, input_size: int, batch_size: int, repeats: int) -> dict:
    """Stream a folder through ``make_tf_dataset`` (training order) and time full passes."""
    from transferlab.data import load_dataset
    from transferlab.pipeline import make_tf_dataset

    cfg = load_config(None, {"data.kind": "folder", "data.data_dir": root})
    dataset = load_dataset(cfg)
    ds = make_tf_dataset(dataset, dataset.table, batch_size, input_size, training=True)

    def one_pass():
        for _ in ds:
            pass

    seconds = time_runs(one_pass, repeats)
    return {"images": len(dataset.table), "seconds": seconds, "max_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec, imports included.

    Linux carries ru_maxrss across fork and exec, so a child of a big parent would report
    the parent's peak; VmHWM in /proc/self/status belongs to this process image alone.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stream_in_subprocess(root: Path, input_size: int, batch_size: int, repeats: int) -> dict:
    """``stream_folder`` in a fresh Python process, so its peak memory is its own."""
    args = json.dumps([str(root), input_size, batch_size, repeats])
    code = (
        "import json, sys; from transferlab.benchmarks import stream_folder; "
        "print(json.dumps(stream_folder(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"pipeline benchmark subprocess failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pipeline_scaling(cfg: Config, work_dir: Path) -> dict:
    """Seconds per image and peak resident memory streaming N, 2N and 4N files from disk."""
    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    figures = []
    for count in (bench.pipeline_images, 2 * bench.pipeline_images, 4 * bench.pipeline_images):
        root = write_synthetic_folder(work_dir / f"n{count}", count, bench.file_size)
        run = stream_in_subprocess(root, input_size, bench.batch_size, bench.repeats)
        per_image = [s / count * 1e3 for s in run["seconds"]]
        labels = {"images": count, "input_size": input_size, "max_rss_mb": run["max_rss_mb"]}
        figures.append(figure("ms_per_image", "ms/image", per_image, **labels))
    per_image = [r["median"] for r in figures]
    memory = [r["max_rss_mb"] for r in figures]
    return {
        "benchmark": "pipeline_scaling",
        "file_size": bench.file_size,
        "input_size": input_size,
        # Flat means 4N costs per image within 25% of N, and peak memory within 10%.
        "time_growth": per_image[-1] / per_image[0],
        "memory_growth": memory[-1] / memory[0],
        "figures": figures,
    }


# --- 4. pipeline overhead --------------------------------------------------------------


def pipeline_overhead(cfg: Config, folder: Path, speed: dict | None = None) -> dict:
    """Input pipeline alone (in this process, warm) against the model's steps alone.

    ``speed`` is ``model_speed`` at the pipeline's input size; measured here if not given.
    """
    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    run = stream_folder(str(folder), input_size, bench.batch_size, bench.repeats)
    pipeline = figure("pipeline", "images/s", rates(run["images"], run["seconds"]))
    pipeline.update(size=input_size, batch_size=bench.batch_size)
    speed = speed or model_speed(cfg, input_size, bench.batch_size, bench.repeats)
    forward, train = speed["figures"]
    return {
        "benchmark": "pipeline_overhead",
        "input_size": input_size,
        # The slower side bounds training; on a CPU both share the same cores.
        "bound_by": "model" if train["median"] < pipeline["median"] else "input pipeline",
        # Share of a training step's time the pipeline would take on the same cores.
        "pipeline_share_of_train_step": train["median"] / pipeline["median"],
        "figures": [pipeline, forward, train],
    }


# --- 1. frozen phase cost --------------------------------------------------------------

# The goals: cached phase 1 at least this many times faster, per epoch count.
FROZEN_GOALS = {10: 5.0, 30: 10.0}


def frozen_config(cfg: Config, images: Path, run_dir: Path, epochs: int, cached: bool) -> Config:
    """The configured phase 1 on the synthetic folder, every output under ``run_dir``."""
    run = copy.deepcopy(cfg)
    run.experiment = "bench_frozen"
    run.output_dir = str(run_dir / "outputs")
    run.models_dir = str(run_dir / "models")
    run.checkpoints_dir = str(run_dir / "checkpoints")
    run.data = type(cfg.data)(kind="folder", data_dir=str(images), splits=[0.8, 0.2, 0.0])
    run.model.image_size = cfg.bench.frozen_image_size
    run.model.weights = "none"
    # Augmentation would switch caching off in both runs; the benchmark compares the two.
    run.model.augmentation = []
    # Dropout draws differ between the head alone and the full model; without it both
    # arms compute the same function, so equal losses show caching changes speed only.
    run.model.dropout = 0.0
    run.train.cache_features = cached
    run.phase1.epochs = epochs
    run.phase1.patience = 0  # every epoch runs: both arms do the same work
    return run


def frozen_phase(cfg: Config, work_dir: Path, warmup: bool = True) -> dict:
    """Wall time of phase 1 with cached features and end to end, same data, seed and model.

    Each repeat runs both arms back to back, so a change in machine load hits both.
    """
    from transferlab.training import train_phase
    from transferlab.training.records import read_metrics

    bench = cfg.bench
    # Two classes: the head's size barely matters, and a tiny N still splits stratified.
    images = write_synthetic_folder(
        work_dir / "frozen_images", bench.frozen_images, bench.frozen_image_size, classes=2
    )
    runs = iter(range(10**6))

    def timed(epochs: int, cached: bool) -> tuple[float, dict]:
        run_cfg = frozen_config(cfg, images, work_dir / f"run{next(runs)}", epochs, cached)
        start = time.perf_counter()
        result = train_phase(run_cfg, "phase1")
        elapsed = time.perf_counter() - start
        rows = read_metrics(result.run_dir / "metrics.csv")
        return elapsed, {
            "final_val_loss": rows[-1]["val_loss"],
            "feature_cache_s": result.summary.get("feature_cache_s"),
            "fit_epochs_s": sum(r["epoch_time"] for r in rows),
        }

    keras.config.disable_interactive_logging()  # no progress bars for dozens of fits
    try:
        if warmup:
            timed(1, True)  # first-call costs (imports, TensorBoard) are not phase 1's
        figures, results = [], []
        for epochs in bench.frozen_epochs:
            seconds = {True: [], False: []}
            for _ in range(bench.repeats):
                for cached in (True, False):
                    elapsed, metrics = timed(epochs, cached)
                    seconds[cached].append(elapsed)
                    results.append({"epochs": epochs, "cached": cached, "s": elapsed, **metrics})
            cached_row = figure("phase1_cached", "s", seconds[True], epochs=epochs)
            e2e_row = figure("phase1_end_to_end", "s", seconds[False], epochs=epochs)
            ratio = e2e_row["median"] / cached_row["median"]
            goal = FROZEN_GOALS.get(epochs)
            ratio_row = {
                "figure": "speedup",
                "unit": "x",
                "median": ratio,
                # Bounds: fastest end to end over slowest cached, and the reverse.
                "min": e2e_row["min"] / cached_row["max"],
                "max": e2e_row["max"] / cached_row["min"],
                "epochs": epochs,
                "goal": goal,
                "goal_met": None if goal is None else ratio >= goal,
            }
            figures += [cached_row, e2e_row, ratio_row]
    finally:
        keras.config.enable_interactive_logging()
    losses = {(r["epochs"], r["cached"]): r["final_val_loss"] for r in results}
    return {
        "benchmark": "frozen_phase",
        # Same results: the largest final validation-loss gap between the two arms.
        "val_loss_gap": max(abs(losses[e, True] - losses[e, False]) for e in bench.frozen_epochs),
        "backbone": cfg.model.backbone,
        "images": bench.frozen_images,
        "image_size": bench.frozen_image_size,
        "batch_size": cfg.train.batch_size,
        "figures": figures,
        # Best validation metrics of every run: the two arms should agree.
        "results": results,
    }


# --- machine, files and the stage ----------------------------------------------------------


def machine_info() -> dict:
    """CPU model and cores (from /proc/cpuinfo), accelerators and library versions."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    models = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    return {
        "cpu": models[0] if models else platform.processor() or "unknown",
        "logical_cores": len(models) or None,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "backend_version": backend_version(),
        "numpy": np.__version__,
        "devices": accelerator_names(),
        # Other processes share the cores: the 1-minute load when the benchmarks started.
        "load_average_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def backend_version() -> str:
    module = __import__(keras.backend.backend())
    return f"{module.__name__} {getattr(module, '__version__', '?')}"


def accelerator_names() -> list[str]:
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    return []


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
    """The `make bench` stage: all four benchmarks, their files and the summary table."""
    from transferlab.benchmark_report import write_summary

    out_dir = Path(cfg.output_dir) / "bench"
    machine = machine_info()
    params = {"bench": dict(vars(cfg.bench)), "model": dict(vars(cfg.model))}
    results = []

    def keep(result: dict) -> dict:
        result.update(machine=machine, params=params)
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
        keep(frozen_phase(cfg, work))
    summary = write_summary(results, machine, Path(cfg.bench.summary))
    return f"results in {out_dir}, summary in {summary}"
