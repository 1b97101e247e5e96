"""Training across processes and machines: Keras's JAX backend with ``keras.distribution``.

Keras 3 cannot ``fit`` under TensorFlow's MultiWorkerMirroredStrategy
(keras-team/keras#20585); its maintainers' answer is the JAX backend, where
``keras.distribution.DataParallel`` over every device of every process trains one
model. A run of N processes is N copies of the same command with Keras's own
environment variables:

    KERAS_BACKEND=jax
    KERAS_DISTRIBUTION_JOB_ADDRESSES=host-of-process-0:port   (the coordinator)
    KERAS_DISTRIBUTION_NUM_PROCESSES=N
    KERAS_DISTRIBUTION_PROCESS_ID=0..N-1

Every process reads only its share of each training batch (``make_tf_dataset``'s
``shard``); process 0, the chief, holds the phase lock and writes the run folder,
checkpoints and models, and the others wait for it at the start and the end of a
phase. The folders (checkpoints_dir, models_dir, output_dir) must be on storage
every host sees. ``docs/scaling.md`` has the commands for one machine, Slurm and
Kubernetes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from transferlab.runs import write_with

ADDRESS = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


class DistributedError(RuntimeError):
    """A set-up that cannot train across processes; the message says what to change."""


def on_jax() -> bool:
    return keras.backend.backend() == "jax"


def requested_processes(environ=os.environ) -> int:
    """How many processes the environment asks for (1 when it does not say)."""
    value = environ.get(PROCESSES, "1") or "1"
    try:
        count = int(value)
    except ValueError:
        message = f"{PROCESSES}={value!r} is not a whole number of processes"
        raise DistributedError(message) from None
    if count < 1:
        raise DistributedError(f"{PROCESSES}={count}: it must be at least 1")
    return count


def process_index() -> int:
    """This process's number: 0 (the chief) unless a multi-process JAX run is on."""
    if on_jax() and requested_processes() > 1:
        import jax

        return jax.process_index()
    return 0


def process_count() -> int:
    if on_jax() and requested_processes() > 1:
        import jax

        return jax.process_count()
    return 1


def check_backend(cfg, strategy=None) -> None:
    """Refuse, before any work, what the current backend cannot do, saying what can."""
    processes = requested_processes()
    if not on_jax():
        if processes > 1:
            raise DistributedError(
                f"{PROCESSES}={processes} asks for a multi-process run, which needs the JAX "
                f"backend (KERAS_BACKEND is {keras.backend.backend()}): set KERAS_BACKEND=jax, "
                "or use `make train-phase1 PROCESSES=N`, which does"
            )
        return
    if strategy is not None and getattr(strategy, "num_replicas_in_sync", 1) > 1:
        raise DistributedError(
            "a tf.distribute strategy cannot train under KERAS_BACKEND=jax: leave strategy "
            "out (every device is used through keras.distribution.DataParallel), or use the "
            "TensorFlow backend for MirroredStrategy"
        )
    import jax

    on_gpu = jax.default_backend() == "gpu"
    if cfg.train.deterministic and on_gpu and "xla_gpu_deterministic_ops" not in xla_flags():
        raise DistributedError(
            "train.deterministic under KERAS_BACKEND=jax on a GPU needs XLA's deterministic "
            "kernels, chosen before JAX starts: run with "
            "XLA_FLAGS=--xla_gpu_deterministic_ops=true, or set train.deterministic=false"
        )


def xla_flags() -> str:
    return os.environ.get("XLA_FLAGS", "")


_started = False


def start(cfg) -> None:
    """Join the other processes (once per process) and spread training over every device.

    Under the TensorFlow backend this does nothing. Under JAX: TensorFlow, which only
    feeds the input pipeline, is kept off the GPUs; with several processes,
    ``keras.distribution.initialize`` connects them (JAX's distributed runtime);
    with more than one device in all, ``DataParallel`` replicates the model on each
    and splits every batch between them.
    """
    global _started
    if not on_jax():
        return
    import jax
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # TensorFlow already started: leave it be
        tf.config.set_visible_devices([], "GPU")
    if not _started and requested_processes() > 1:
        for name in (ADDRESS, PROCESS_ID):
            if not os.environ.get(name):
                raise DistributedError(
                    f"{PROCESSES}={requested_processes()} but {name} is not set: every process "
                    f"needs {ADDRESS} (host:port of process 0), {PROCESSES} and its own "
                    f"{PROCESS_ID} (see docs/scaling.md)"
                )
        keras.distribution.initialize()
    _started = True
    devices = jax.devices()
    if len(devices) > 1:
        check_batch(cfg.train.batch_size, process_count(), jax.local_device_count())
        # auto_shard_dataset=False: make_tf_dataset already gives each process its share,
        # before any image is read (Keras's own sharding reads every image everywhere).
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        )


def check_batch(batch_size: int, processes: int, local_devices: int) -> None:
    """A global batch must split evenly: over the processes, then over each one's devices."""
    share = processes * local_devices
    if batch_size % share:
        nearest = max(share, round(batch_size / share) * share)
        raise DistributedError(
            f"train.batch_size={batch_size} does not split evenly over {processes} "
            f"process(es) x {local_devices} device(s): choose a multiple of {share} "
            f"(e.g. train.batch_size={nearest})"
        )


def replicas(strategy) -> int:
    """How many devices share each batch: the distribution's under JAX, else the strategy's."""
    distribution = keras.distribution.distribution() if on_jax() else None
    if distribution is not None:
        return int(np.prod(distribution.device_mesh.shape))
    return strategy.num_replicas_in_sync


def lock_if_chief(lock):
    """The phase lock, held by the chief alone (the others run under its lock)."""
    return lock if process_index() == 0 else contextlib.nullcontext()


def barrier(name: str) -> None:
    """Wait here until every process arrives (nothing to wait for in a one-process run)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def chief_first(on_chief, on_others, name: str):
    """Run ``on_chief`` on the chief; the others wait for it, then run ``on_others``.

    When the chief fails, the others stop too (instead of waiting for it forever).
    """
    if process_count() == 1:
        return on_chief()
    from jax.experimental import multihost_utils

    chief = process_index() == 0
    failed = None
    result = None
    if chief:
        try:
            result = on_chief()
        except BaseException as err:  # also Ctrl-C: the others must not wait forever
            failed = err
    status = multihost_utils.broadcast_one_to_all(np.int32(failed is not None))
    if failed is not None:
        raise failed
    if int(status):
        raise DistributedError(
            f"process 0 stopped during {name}; its output says why. Fix that and run again."
        )
    return result if chief else on_others()


@contextlib.contextmanager
def local_only():
    """Keras with no distribution: the chief's own work (its predictions) on its own device."""
    saved = keras.distribution.distribution() if on_jax() else None
    if saved is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(saved)


def publish_checkpoint(checkpoint: Path, destination: Path) -> None:
    """Publish a full-model checkpoint as the phase's best model (a file copy, no Keras)."""
    write_with(destination, lambda tmp: shutil.copyfile(checkpoint, tmp))
