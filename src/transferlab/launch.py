"""``--processes N``: one training run as N local processes on loopback, to try it out.

Each process is the same command with the JAX backend and Keras's distribution
variables (coordinator 127.0.0.1:<free port>, N processes, its own id); on a
cluster, Slurm or Kubernetes starts them instead (docs/scaling.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from transferlab.training.distributed import ADDRESS, PROCESS_ID, PROCESSES

# The stages that train across processes.
DISTRIBUTED_STAGES = ("train-phase1", "train-phase2")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_environments(processes: int, port: int, environ=os.environ) -> list[dict]:
    """The environment of each of ``processes`` local processes of one JAX run."""
    shared = {**environ, "KERAS_BACKEND": "jax"}
    if processes > 1:
        shared.update({ADDRESS: f"127.0.0.1:{port}", PROCESSES: str(processes)})
    return [
        {**shared, PROCESS_ID: str(index)} if processes > 1 else shared
        for index in range(processes)
    ]


def launch(command: list[str], processes: int) -> int:
    """Run ``command`` as ``processes`` processes of one run; the first failure stops all.

    Returns 0 when every process succeeded, else the first failing exit status.
    """
    if processes < 1:
        raise ValueError(f"--processes {processes}: it must be at least 1")
    children = [
        subprocess.Popen(command, env=env) for env in process_environments(processes, free_port())
    ]
    try:
        while True:
            codes = [child.poll() for child in children]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                stop(children)
                return failed[0]
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop(children)
        return 130


def stop(children: list[subprocess.Popen]) -> None:
    """Stop the processes still running (the others would wait for the failed one)."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
