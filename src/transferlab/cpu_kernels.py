"""oneDNN's CPU kernels for TensorFlow, on every x86 CPU unless the user says otherwise.

TensorFlow (2.21) turns oneDNN on by default only on CPUs with AVX-512-class features
(Colab's Xeons have them). Elsewhere (AMD EPYC, older Intel) it falls back to its own
kernels, whose convolution gradients are slow at small feature maps: measured on a
2-core AMD EPYC, the input gradient of a 3x3 conv on a 2x2x512 map (batch 64) took
0.455 s without oneDNN and 0.026 s with it, and a ResNet50 training step from conv5 at
64 px 2.66 s against 0.70 s. Fine-tuning from conv5 runs exactly those layers.

The variable is read once, when TensorFlow loads, so it is set before that;
``TF_ENABLE_ONEDNN_OPTS=0`` keeps TensorFlow's own kernels.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn() -> None:
    """Ask TensorFlow for oneDNN's kernels, unless it is loaded or the user chose."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(VARIABLE, "1")
