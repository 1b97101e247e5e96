"""Where training runs: device, precision, distribution strategy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


# train.mixed_precision -> Keras dtype policy. "on" is what it always meant: float16.
POLICIES = {
    "float16": "mixed_float16",
    "on": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
    "off": "float32",
}
# bfloat16 runs at full speed from Ampere (compute capability 8.0) on, and needs no
# loss scaling; older GPUs have float16 tensor cores only.
BFLOAT16_FROM = (8, 0)


def set_precision(mode: str) -> str:
    """Set Keras's global dtype policy for ``train.mixed_precision``; return its name."""
    policy = choose_policy(mode, gpu_capabilities())
    keras.mixed_precision.set_global_policy(policy)
    return policy


def choose_policy(mode: str, capabilities: list[tuple[int, int]]) -> str:
    """The policy for ``mode`` on GPUs of these compute capabilities (none: a CPU).

    "auto": float32 on a CPU (mixed precision is slower there), bfloat16 when every GPU
    is Ampere or newer, float16 otherwise. The other modes force their policy.
    """
    if mode != "auto":
        return POLICIES[mode]
    if not capabilities:
        return "float32"
    return "mixed_bfloat16" if min(capabilities) >= BFLOAT16_FROM else "mixed_float16"


def gpu_capabilities() -> list[tuple[int, int]]:
    """Each visible GPU's compute capability, (0, 0) where TensorFlow (or JAX) does not say."""
    if keras.backend.backend() == "jax":
        import jax

        found = [d for d in jax.devices() if d.platform == "gpu"]
        versions = [getattr(d, "compute_capability", "0.0") for d in found]
        return [tuple(int(n) for n in str(v).split(".")[:2]) for v in versions]
    details = [tf.config.experimental.get_device_details(g) for g in gpus()]
    return [tuple(d.get("compute_capability") or (0, 0)) for d in details]


class UnsupportedStrategyError(RuntimeError):
    """A distribution set-up the installed Keras cannot train with."""


def choose_strategy() -> tf.distribute.Strategy:
    """Mirrored on >1 GPU, else the default; a multi-worker TF_CONFIG is a clear error."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        # Tried here: two workers on loopback fail inside Keras's fit with a PerReplica
        # conversion error, the open Keras 3 bug keras-team/keras#20585.
        raise UnsupportedStrategyError(
            f"TF_CONFIG names a {sum(len(t) for t in cluster.values())}-task cluster, but "
            "Keras 3's fit does not train with MultiWorkerMirroredStrategy yet "
            "(keras-team/keras#20585). Train on one machine: transferlab uses every GPU "
            "there through MirroredStrategy. Unset TF_CONFIG to continue."
        )
    if keras.backend.backend() != "tensorflow":
        # keras.distribution spreads a JAX run over its devices (training.distributed).
        return tf.distribute.get_strategy()
    if len(gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Only the chief writes files in a multi-worker run (worker 0 when no chief is named)."""
    from transferlab.training.distributed import process_index

    if process_index() != 0:
        return False  # a multi-process JAX run: process 0 is the chief
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task")
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def describe_device() -> str:
    if keras.backend.backend() == "jax":
        import jax

        kinds = sorted({d.device_kind for d in jax.devices()})
        return f"{jax.device_count()} JAX device(s): {', '.join(kinds)}"
    found = gpus()
    if not found:
        return f"CPU ({os.cpu_count()} cores)"
    names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in found]
    return ", ".join(names)


# --- the device report a notebook's first cell prints -----------------------------------

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def device_report() -> str:
    """The device this run will use, with TensorFlow's and Keras's versions.

    A second line warns when a GPU was chosen (a Colab GPU runtime, or a loaded NVIDIA
    driver) but TensorFlow sees none, so training would quietly run on the CPU.
    """
    report = (
        f"Device: {describe_device()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
    )
    expected = gpu_expected(os.environ, NVIDIA_DRIVER)
    warning = missing_gpu_warning(bool(gpus()), expected, tf.test.is_built_with_cuda(), os.environ)
    return f"{report}\nWARNING: {warning}" if warning else report


def gpu_expected(environ, driver: Path) -> str | None:
    """Why this machine should have a GPU, or None when nothing says so."""
    # Colab sets COLAB_GPU=1 on GPU runtimes only (0 or empty on CPU and TPU ones).
    if environ.get("COLAB_GPU") == "1":
        return "this is a Colab GPU runtime"
    if driver.is_file():
        return "this machine has an NVIDIA driver loaded"
    return None


def missing_gpu_warning(
    sees_gpu: bool, expected: str | None, built_with_cuda: bool, environ
) -> str | None:
    """What to do when a GPU was chosen but TensorFlow sees none; None when all is well."""
    if sees_gpu or expected is None:
        return None
    if environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        fix = "CUDA_VISIBLE_DEVICES hides every GPU; unset it and restart the kernel"
    elif not built_with_cuda:
        fix = (
            f"TensorFlow {tf.__version__} here is built without CUDA (tensorflow-cpu?); "
            "install the CUDA build: pip install -e '.[gpu]' (not on Colab), then restart"
        )
    else:
        fix = (
            "it cannot load the CUDA libraries it was built for. On Colab that usually means "
            "an install replaced the runtime's own TensorFlow: Runtime > Disconnect and "
            "delete runtime, then run again (the install cell keeps a compatible "
            "TensorFlow). Elsewhere: pip install -e '.[gpu]' and restart the kernel"
        )
    return f"{expected}, but TensorFlow sees no GPU, so this run will use the CPU: {fix}."
