"""TensorFlow's C++ start-up noise is hidden unless the user sets TF_CPP_MIN_LOG_LEVEL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from transferlab.cpu_kernels import VARIABLE, use_onednn
from transferlab.import_hooks import FirstImport
from transferlab.tf_logs import NOISE, filtered_stderr, quiet_tensorflow

from .conftest import ROOT

CUDART = (
    "I0000 00:00:1795471443.826835    5888 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
)
ONEDNN = (
    "I0000 00:00:1795947571.588511    9481 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.\n"
)
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def test_filtered_stderr_drops_the_noise_and_keeps_the_rest(capfd):
    with filtered_stderr(NOISE):
        os.write(2, (ABSL + ONEDNN + CUDART + "E0000 real trouble\n" + ONEDNN + "more\n").encode())
    assert capfd.readouterr().err == "E0000 real trouble\nmore\n"


def test_a_level_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert not any(isinstance(f, FirstImport) and f.name == "tensorflow" for f in sys.meta_path)


@pytest.mark.slow
def test_importing_tensorflow_through_transferlab_prints_no_noise():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # the oneDNN line too, on any CPU
    code = "import transferlab, tensorflow as tf; print(len(tf.config.list_physical_devices()))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert not any(line in result.stderr for line in NOISE), result.stderr


def test_transferlab_turns_onednn_on():
    code = (
        "import transferlab, tensorflow\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(_pywrap_util_port.IsMklEnabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "True"


def test_a_onednn_choice_of_the_user_is_kept(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setenv(VARIABLE, "0")
    use_onednn()
    assert os.environ[VARIABLE] == "0"
    monkeypatch.delenv(VARIABLE)
    use_onednn()
    assert os.environ[VARIABLE] == "1"
