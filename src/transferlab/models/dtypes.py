"""Loading a saved model in the precision the caller asks for, not the one it trained in.

Keras 3 writes each layer's dtype policy into the ``.keras`` file's config.json
(``{"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}``), and
``keras.models.load_model`` rebuilds exactly those layers whatever the global policy
is: a model trained under mixed precision on a GPU would evaluate, explain and export
in float16 on a CPU (about 3x slower there, and Grad-CAM's gradients in float16).
``load_with_policy`` rewrites the mixed policies in the config before the layers are
built, then loads the weights (float32 variables under every policy) unchanged. The
layers a config gives no policy (inputs, nested models) take the global one, so that is
``policy`` too while they are built.
"""

from __future__ import annotations

import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def load_with_policy(path: str | Path, policy: str) -> keras.Model:
    """The model saved at ``path``, its mixed-precision layers rebuilt under ``policy``.

    Layers saved with a plain policy (float32 softmax, augmentation) keep it. Safe mode,
    no optimizer (as ``load_model(..., compile=False)``).
    """
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    config["compile_config"] = None
    with global_policy(policy):
        model = keras.saving.deserialize_keras_object(with_policy(config, policy), safe_mode=True)
    model.load_weights(path)
    return model


@contextmanager
def global_policy(policy: str):
    """Keras's global dtype policy set to ``policy`` inside the block only."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def with_policy(config: Any, policy: str) -> Any:
    """A copy of a saved model's config with every mixed dtype policy replaced by ``policy``."""
    if isinstance(config, list):
        return [with_policy(item, policy) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy" and is_mixed(config.get("config", {})):
        return {**config, "config": {**config["config"], "name": policy}}
    return {key: with_policy(value, policy) for key, value in config.items()}


def is_mixed(policy_config: dict) -> bool:
    return policy_config.get("name") in MIXED_POLICIES


def compute_dtypes(model: keras.Model) -> set[str]:
    """Every compute dtype among ``model``'s layers, nested models' layers included."""
    found = set()
    for layer in model.layers:
        found.add(layer.dtype_policy.compute_dtype)
        if isinstance(layer, keras.Model):
            found |= compute_dtypes(layer)
    return found
