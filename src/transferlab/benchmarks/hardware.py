"""The hardware limit: measured matmul peak against the model's own counted FLOPs.

Keras APIs only, so it runs under KERAS_BACKEND=jax on machines without TensorFlow.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from transferlab.benchmarks.timing import figure, rates, time_runs
from transferlab.config import Config


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
    # On the device once: timing the step, not a host-to-device copy per call.
    x, y = (keras.ops.convert_to_tensor(a) for a in synthetic_batch(batch_size, size, num_classes))
    forward = rates(batch_size, time_runs(lambda: model.predict_on_batch(x), repeats))
    unfreeze_from(model, "all", cfg.model.backbone)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    train = rates(batch_size, time_runs(lambda: model.train_on_batch(x, y), repeats))
    labels = {"size": size, "batch_size": batch_size}
    return {
        "figures": [
            figure("forward", "images/s", forward, **labels, flops_per_image=flops),
            # Backward costs two forwards (input and weight gradients): 3x forward per image.
            figure("train_step", "images/s", train, **labels, flops_per_image=3 * flops),
        ],
    }


def against_peak(row: dict, peak_flops: float) -> dict:
    """Add a model-speed row's achieved FLOP/s and its fraction of the measured peak."""
    row["achieved_flops"] = row["median"] * row["flops_per_image"]
    row["fraction_of_peak"] = row["achieved_flops"] / peak_flops
    return row


def hardware_limit(cfg: Config, sizes: list[int] | None = None) -> dict:
    """Matmul peak, then forward and training speed at ``bench.model_sizes`` (224) and the
    configured ``model.image_size``, as images/s and as a fraction of the peak."""
    bench = cfg.bench
    peak = matmul_peak(bench.matmul_sizes, bench.repeats)
    sizes = sizes or sorted({*bench.model_sizes, cfg.model.image_size})
    figures = list(peak["figures"])
    for size in sizes:
        speed = model_speed(cfg, size, bench.batch_size, bench.repeats)
        figures += [against_peak(row, peak["peak_flops"]) for row in speed["figures"]]
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
