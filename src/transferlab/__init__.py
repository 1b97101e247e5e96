"""transferlab: fine-tune ImageNet CNNs on your own images with Keras, from notebooks.

``import transferlab`` is enough for ``keras.models.load_model`` to read any model the
project saved: the custom objects those files name register with Keras as soon as
Keras is loaded (see ``register_keras_objects``).
"""

import importlib.abc
import importlib.util
import sys

from transferlab.config import Config, ConfigError, load_config
from transferlab.tf_logs import quiet_tensorflow

# TensorFlow's C++ start-up lines read as errors; hide them before anything imports it.
quiet_tensorflow()

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "__version__"]


def register_keras_objects() -> None:
    """Register the layers and schedule saved models name, now or right after Keras loads.

    Importing Keras (and with it TensorFlow) takes seconds, which ``import transferlab``
    should not cost the command line; so when Keras is not loaded yet, registration
    waits for the first ``import keras``, wherever it comes from.
    """
    if "keras" in sys.modules:
        import transferlab.models  # noqa: F401  (importing it registers the objects)
    elif not any(isinstance(finder, RegisterAfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterAfterKeras())


class RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Runs ``register_keras_objects`` once Keras itself has finished importing."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # once is enough; the real finders do the finding
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            register_keras_objects()

        spec.loader.exec_module = exec_module
        return spec


register_keras_objects()
