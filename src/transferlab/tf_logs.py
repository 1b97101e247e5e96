"""TensorFlow's C++ start-up noise, silenced unless the user asks for it.

On a machine without a GPU, ``import tensorflow`` (2.21) prints "Could not find cuda
drivers on your machine, GPU will not be used" and absl's "All log messages before
absl::InitializeLog() is called are written to STDERR", and the first device query
prints "failed call to cuInit". On CPUs where oneDNN's optimisations are on by default
(or TF_ENABLE_ONEDNN_OPTS=1) it also says "oneDNN custom operations are on", twice: two
of TensorFlow's shared libraries each log it while they load. Users read them as errors.
They come from C++, partly before TF_CPP_MIN_LOG_LEVEL is read, so that variable alone
does not hide them.

``quiet_tensorflow`` sets TF_CPP_MIN_LOG_LEVEL=2 (no C++ INFO or WARNING lines) and,
the first time anything imports tensorflow, sends stderr to a file while it loads and
lists its devices, then writes back every line but that noise. It does nothing when
TF_CPP_MIN_LOG_LEVEL is already set: ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager

from transferlab.import_hooks import on_first_import

NOISE = (
    "Could not find cuda drivers on your machine",
    "All log messages before absl::InitializeLog() is called",
    "failed call to cuInit",
    "oneDNN custom operations are on",
)


# Set beside TF_CPP_MIN_LOG_LEVEL when transferlab chose it, so the processes it starts
# (a notebook's kernel) tell that choice from the user's.
MARKER = "TRANSFERLAB_QUIET_TENSORFLOW"


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up noise, unless TF_CPP_MIN_LOG_LEVEL says otherwise."""
    chosen_by_user = "TF_CPP_MIN_LOG_LEVEL" in os.environ and MARKER not in os.environ
    if chosen_by_user or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ[MARKER] = "1"
    on_first_import("tensorflow", load_quietly)


def load_quietly(load, module) -> None:
    """Import tensorflow and list its devices with the start-up noise filtered out."""
    with filtered_stderr(NOISE):
        load(module)
        # The first device query is where CUDA's initialisation fails loudly.
        module.config.list_physical_devices()


@contextmanager
def filtered_stderr(noise: tuple[str, ...]):
    """Lines written to stderr (file descriptor 2) in the block, written back without ``noise``."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        flush_stderr()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(n in line for n in noise))
            if kept:
                os.write(2, kept.encode())


def flush_stderr() -> None:
    # Python's own buffered writes belong on the side of the switch they were made on.
    if sys.stderr is not None:
        sys.stderr.flush()
