"""transferlab: fine-tune ImageNet CNNs on your own images with Keras, from notebooks."""

from transferlab.config import Config, ConfigError, load_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "__version__"]
