"""Input-pipeline benchmarks: a folder streamed at N, 2N, 4N, and its overhead."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.benchmarks.hardware import model_speed
from transferlab.benchmarks.timing import figure, rates, time_runs
from transferlab.config import Config, load_config


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
    from transferlab.data.pipeline import make_tf_dataset

    # The scan's record goes beside the folder, not into the project's outputs/.
    outputs = str(Path(root).parent / "outputs")
    cfg = load_config(None, {"data.kind": "folder", "data.data_dir": root, "output_dir": outputs})
    dataset = load_dataset(cfg)
    ds = make_tf_dataset(dataset, dataset.table, batch_size, input_size, epochs=(0, 1))

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


def in_fresh_process(function: str, *args) -> dict:
    """``module:function(*args)`` in a fresh Python process, so its peak memory is its own.

    The arguments and the returned dict travel as JSON.
    """
    module, name = function.split(":")
    code = (
        f"import json, sys; from {module} import {name}; "
        f"print(json.dumps({name}(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {function} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pipeline_scaling(cfg: Config, work_dir: Path) -> dict:
    """Seconds per image and peak resident memory streaming N, 2N and 4N files from disk."""
    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    figures = []
    for count in (bench.pipeline_images, 2 * bench.pipeline_images, 4 * bench.pipeline_images):
        root = write_synthetic_folder(work_dir / f"n{count}", count, bench.file_size)
        run = in_fresh_process(
            "transferlab.benchmarks.pipeline:stream_folder",
            str(root),
            input_size,
            bench.batch_size,
            bench.repeats,
        )
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
