"""Experiment configuration: plain dataclasses, loaded from YAML, validated on load.

Overrides come as dotted keys (``phase1.epochs=3``) from notebook parameters, make
variables or keyword arguments. An unknown key is an error that names the nearest
valid key; a value of the wrong type or out of range is an error that names the key,
the value and what is allowed.
"""

from transferlab.config.loading import (
    all_keys,
    config_from_dict,
    flatten,
    load_config,
    parse_overrides,
)
from transferlab.config.schema import (
    AUGMENTATIONS,
    BenchConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PhaseConfig,
    PredictConfig,
    ReportConfig,
    TrainConfig,
)

__all__ = [
    "AUGMENTATIONS",
    "BenchConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "PhaseConfig",
    "PredictConfig",
    "ReportConfig",
    "TrainConfig",
    "all_keys",
    "config_from_dict",
    "flatten",
    "load_config",
    "parse_overrides",
]
