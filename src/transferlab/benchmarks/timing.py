"""Timing helpers and the description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np


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


def ratio_figure(name: str, top: dict, bottom: dict, **labels) -> dict:
    """``top`` over ``bottom`` (two figures): the ratio of medians, with bounds that pair
    the fastest of one with the slowest of the other, and the reverse."""
    return {
        "figure": name,
        "unit": "x",
        "median": top["median"] / bottom["median"],
        "min": top["min"] / bottom["max"],
        "max": top["max"] / bottom["min"],
        **labels,
    }


def rates(count: int, seconds: list[float]) -> list[float]:
    return [count / s for s in seconds]


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
