"""transferlab: fine-tune ImageNet CNNs on your own images with Keras, from notebooks.

``import transferlab`` is enough for ``keras.models.load_model`` to read any model the
project saved: the custom objects those files name register with Keras as soon as
Keras is loaded (see ``register_keras_objects``).
"""

import sys

from transferlab.config import Config, ConfigError, load_config
from transferlab.cpu_kernels import use_onednn
from transferlab.import_hooks import on_first_import
from transferlab.tf_logs import quiet_tensorflow

# TensorFlow's C++ start-up lines read as errors; hide them before anything imports it.
quiet_tensorflow()
# Its fast CPU kernels on every x86 CPU, not only AVX-512 ones (see cpu_kernels).
use_onednn()

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
    else:
        on_first_import("keras", load_then_register)


def load_then_register(load, module) -> None:
    load(module)
    register_keras_objects()


register_keras_objects()
