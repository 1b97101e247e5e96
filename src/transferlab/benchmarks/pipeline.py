"""Input-pipeline benchmarks: a folder streamed at N, 2N, 4N, its overhead, JPEG decode speed."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.benchmarks.hardware import model_speed
from transferlab.benchmarks.timing import figure, rates, ratio_figure, time_runs
from transferlab.config import Config, load_config


def write_synthetic_folder(
    root: Path, count: int, side: int, classes: int = 4, seed: int = 0, height: int | None = None
) -> Path:
    """``count`` random-noise JPEGs, ``side`` wide and ``height`` (default ``side``) high,
    in ``classes`` class sub-folders."""
    rng = np.random.default_rng(seed)
    height = height or side
    for i in range(count):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photo; pure noise would make decoding unusually slow.
        small = rng.integers(0, 256, (height // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, height), Image.BILINEAR)
        image.save(folder / f"{i:06d}.jpg", quality=90)
    return root


def stream_folder(root: str, input_size: int, batch_size: int, repeats: int) -> dict:
    """Stream a folder through ``make_tf_dataset`` (training order), two epochs per repeat.

    Each repeat starts with no decoded images kept: its first epoch decodes every file,
    its second takes the kept pixels. Both are timed and their decodes counted.
    """
    from transferlab.data import decoded, load_dataset
    from transferlab.data.images import decode_count
    from transferlab.data.pipeline import make_tf_dataset

    # The scan's record goes beside the folder, not into the project's outputs/.
    outputs = str(Path(root).parent / "outputs")
    cfg = load_config(None, {"data.kind": "folder", "data.data_dir": root, "output_dir": outputs})
    dataset = load_dataset(cfg)
    steps = -(-len(dataset.table) // batch_size)
    seconds = {"first": [], "later": []}
    decodes = {"first": 0, "later": 0}
    for _ in range(repeats):
        decoded.MEMORY.clear()
        ds = make_tf_dataset(dataset, dataset.table, batch_size, input_size, epochs=(0, 2))
        started, count = time.perf_counter(), decode_count()
        for step, _ in enumerate(ds):
            if step % steps == steps - 1:  # the last batch of an epoch
                epoch = "first" if step < steps else "later"
                now = time.perf_counter()
                seconds[epoch].append(now - started)
                decodes[epoch] += decode_count() - count
                started, count = now, decode_count()
    decoded.MEMORY.clear()
    return {
        "images": len(dataset.table),
        "seconds": seconds["first"],
        "cached_seconds": seconds["later"],
        "decodes_first_epoch": decodes["first"],
        "decodes_later_epochs": decodes["later"],
        "max_rss_mb": peak_rss_mb(),
    }


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


def in_fresh_processes(function: str, calls: list[tuple]) -> list[dict]:
    """``module:function(*args)`` for each ``args`` in ``calls``, each in its own fresh process.

    Every process's peak memory is its own. The processes import TensorFlow side by side,
    then run one at a time (each waits for a line on its stdin), so no timed call
    shares the cores with another. The arguments and the returned dicts travel as JSON.
    """
    module, name = function.split(":")
    code = (
        "import json, sys; import tensorflow, keras; "
        f"from {module} import {name}; sys.stdin.readline(); "
        f"print(json.dumps({name}(*json.loads(sys.argv[1]))))"
    )
    started = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in calls
    ]
    results = []
    for process in started:
        stdout, stderr = process.communicate("go\n")
        if process.returncode != 0:
            for other in started:
                other.kill()
            raise RuntimeError(f"benchmark subprocess {function} failed:\n{stderr[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def pipeline_scaling(cfg: Config, work_dir: Path) -> dict:
    """Seconds per image and peak resident memory streaming N, 2N and 4N files from disk.

    The time is the first epoch's (every file decoded); the second epoch's decodes are
    counted (goal 0: it takes the decoded pixels kept by the first).
    """
    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    counts = (bench.pipeline_images, 2 * bench.pipeline_images, 4 * bench.pipeline_images)
    roots = [write_synthetic_folder(work_dir / f"n{n}", n, bench.file_size) for n in counts]
    runs = in_fresh_processes(
        "transferlab.benchmarks.pipeline:stream_folder",
        [(str(root), input_size, bench.batch_size, bench.repeats) for root in roots],
    )
    figures = []
    for count, run in zip(counts, runs, strict=True):
        labels = {"images": count, "input_size": input_size, "max_rss_mb": run["max_rss_mb"]}
        per_image = [s / count * 1e3 for s in run["seconds"]]
        cached = [s / count * 1e3 for s in run["cached_seconds"]]
        later = run["decodes_later_epochs"]
        figures.append(figure("ms_per_image", "ms/image", per_image, **labels))
        figures.append(figure("cached_ms_per_image", "ms/image", cached, decodes=later, **labels))
    first = [r for r in figures if r["figure"] == "ms_per_image"]
    per_image = [r["median"] for r in first]
    memory = [r["max_rss_mb"] for r in first]
    later = sum(run["decodes_later_epochs"] for run in runs)
    return {
        "benchmark": "pipeline_scaling",
        "file_size": bench.file_size,
        "input_size": input_size,
        # Flat means 4N costs per image within 25% of N, and peak memory within 10%.
        "time_growth": per_image[-1] / per_image[0],
        "memory_growth": memory[-1] / memory[0],
        "decodes_first_epoch": sum(run["decodes_first_epoch"] for run in runs),
        "decodes_later_epochs": later,
        "decodes_goal_met": later == 0,
        "figures": figures,
    }


def decode_speed(cfg: Config, work_dir: Path) -> dict:
    """1920x1080 JPEGs decoded and resized to the input size by 1 and by 2 workers.

    Two readers: the project's (Pillow with draft, OpenCV resize, in ``tf.numpy_function``
    on tf.data's threads) and the export's graph-native one (``tf.io.decode_jpeg`` at the
    same draft scale, TensorFlow resize), which gives the same pixels to one grey level.
    """
    import tensorflow as tf

    from transferlab.data.pipeline import decode_file
    from transferlab.evaluation.export import decode_encoded

    bench = cfg.bench
    input_size = cfg.data.input_size or cfg.model.image_size
    count = max(4, bench.pipeline_images // 4)
    root = write_synthetic_folder(work_dir / "hd", count, 1920, classes=1, height=1080)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    readers = {
        "reader": lambda path: decode_file(path, input_size),
        "graph": lambda path: decode_encoded(tf.io.read_file(path), input_size),
    }
    figures = []
    for name, read in readers.items():
        for workers in (1, 2):
            ds = tf.data.Dataset.from_tensor_slices(paths).map(read, num_parallel_calls=workers)
            options = tf.data.Options()
            options.threading.private_threadpool_size = workers
            ds = ds.with_options(options)

            def one_pass(ds=ds):
                for _ in ds:
                    pass

            speed = rates(count, time_runs(one_pass, bench.repeats))
            figures.append(figure("images_per_s", "images/s", speed, reader=name, workers=workers))
    scaling = {
        name: ratio_figure("scaling", *[r for r in figures if r["reader"] == name][::-1])
        for name in readers
    }
    for name, row in scaling.items():
        row.update(reader=name, workers="2 vs 1")
        figures.append(row)
    return {
        "benchmark": "decode_speed",
        "images": count,
        "file_size": [1920, 1080],
        "input_size": input_size,
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
