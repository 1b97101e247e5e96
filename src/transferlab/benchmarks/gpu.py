"""Accelerator benchmark: ResNet50 training and inference images/s against the measured peak.

Runs the product's own model (``build_model``) under whichever Keras backend is set; the
lent GPU machines have JAX and no TensorFlow, so there it runs with KERAS_BACKEND=jax:

    KERAS_BACKEND=jax python -m transferlab.benchmarks.gpu --out results/

It imports no TensorFlow and nothing that needs it.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import keras

from transferlab.benchmarks.hardware import against_peak, matmul_peak, model_speed
from transferlab.config import load_config
from transferlab.runs import write_json

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def accelerator_speed(
    batch_sizes: list[int],
    policies: list[str],
    size: int,
    repeats: int,
    out_dir: Path,
    backbone: str = "resnet50",
    matmul_sizes: tuple[int, ...] = (4096, 8192),
) -> dict:
    """Forward and training images/s per (precision, batch size), each against its peak."""
    cfg = load_config(None, {"model.backbone": backbone, "model.weights": "none"})
    peaks = {}
    for name in policies:
        dtype = "bfloat16" if name == "bfloat16" else "float32"
        peaks[name] = matmul_peak(list(matmul_sizes), repeats, dtype=dtype)
        write_json(out_dir / "peaks.json", peaks)
    rows = []
    for name in policies:
        keras.mixed_precision.set_dtype_policy(POLICIES[name])
        for batch_size in batch_sizes:
            speed = model_speed(cfg, size, batch_size, repeats)
            for row in speed["figures"]:
                rows.append(against_peak({**row, "precision": name}, peaks[name]["peak_flops"]))
            write_json(out_dir / "speed.json", rows)
            print(json.dumps(speed["figures"]), flush=True)
    keras.mixed_precision.set_dtype_policy("float32")
    return {"peaks": peaks, "figures": rows, "machine": machine()}


def machine() -> dict:
    info = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
    if info["backend"] == "jax":
        import jax

        info |= {"jax": jax.__version__, "devices": [d.device_kind for d in jax.devices()]}
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = accelerator_speed(args.batch_sizes, args.precisions, args.size, args.repeats, args.out)
    write_json(args.out / "gpu_benchmark.json", result)


if __name__ == "__main__":
    main()
