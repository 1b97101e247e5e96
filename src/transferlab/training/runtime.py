"""Where training runs: device, precision, distribution strategy."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def set_precision(mode: str) -> str:
    """Set Keras's global dtype policy: mixed_float16 on a GPU for "auto", else float32."""
    use_mixed = mode == "on" or (mode == "auto" and bool(gpus()))
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


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
    if len(gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Only the chief writes files in a multi-worker run (worker 0 when no chief is named)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task")
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def describe_device() -> str:
    found = gpus()
    if not found:
        return f"CPU ({os.cpu_count()} cores)"
    names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in found]
    return ", ".join(names)
