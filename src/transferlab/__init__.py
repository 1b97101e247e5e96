"""transferlab: fine-tune ImageNet CNNs on your own images with Keras, from notebooks."""

from transferlab.config import Config, ConfigError, load_config
from transferlab.tf_logs import quiet_tensorflow

# TensorFlow's C++ start-up lines read as errors; hide them before anything imports it.
quiet_tensorflow()

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "__version__"]
