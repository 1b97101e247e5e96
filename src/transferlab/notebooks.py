"""Notebook support: config from notebook parameters, and papermill runs for make.

A notebook's ``parameters`` cell holds plain values; ``notebook_config`` turns them into
a validated Config. ``run_notebook`` executes a notebook with papermill in the
``transferlab`` kernel and files the executed copy under the run directory it produced.
"""

from __future__ import annotations

import os
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from transferlab.config import Config, load_config
from transferlab.runs import find_runs, new_run_dir
from transferlab.stages import STAGES

KERNEL_NAME = "transferlab"


class NotebookFailed(RuntimeError):
    """A notebook raised; the executed copy with the error cell is at ``path``."""

    def __init__(self, message: str, path: Path):
        super().__init__(f"{message}\nexecuted notebook with the error: {path}")
        self.path = path


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding pyproject.toml and configs/, searched upwards from ``start``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "configs").is_dir():
            return folder
    return here


def use_project_root() -> Path:
    """Make relative paths (configs/, outputs/, models/) resolve from the project root.

    Jupyter starts a notebook in notebooks/, papermill in the caller's folder; both then
    read and write the same files.
    """
    root = project_root()
    os.chdir(root)
    return root


def notebook_config(
    config: str | None, overrides: str | dict | None = None, **named: Any
) -> Config:
    """Config from a notebook's parameters: a config path, a SET-style string, named values.

    Named values use ``__`` for dots (``phase1__epochs=3``); None means "keep the config's".
    """
    chosen = {key: value for key, value in named.items() if value is not None}
    return load_config(config, overrides, **chosen)


def run_notebook(
    target: str,
    config: str,
    overrides: str = "",
    notebooks_dir: str | Path = "notebooks",
    extra_parameters: dict | None = None,
    notebook: str | None = None,
) -> Path:
    """Execute the notebook behind a make target; return the executed copy's path.

    ``notebook`` runs another notebook in the target's place (08_experiments.ipynb files
    its copy with the compare run it ends with). The executed notebook lands in
    ``outputs/runs/<run-id>/notebooks/`` of the run it produced (or of a new run
    directory when it failed before producing one).
    """
    import papermill
    from nbclient.exceptions import DeadKernelError

    cfg = load_config(config, overrides)  # fail here, before starting a kernel, on a bad config
    notebook, stage = notebook or STAGES[target].notebook, STAGES[target].run_kind
    runs_root = Path(cfg.output_dir) / "runs"
    staging = runs_root / ".executing" / f"{time.strftime('%Y%m%d-%H%M%S')}_{notebook}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    parameters = {"config": str(config), "overrides": overrides, **(extra_parameters or {})}
    error = None
    try:
        papermill.execute_notebook(
            str(Path(notebooks_dir) / notebook),
            str(staging),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(Path.cwd()),
            progress_bar=False,
            # The cells' own output (epoch lines, progress bars) streams to the terminal
            # as it comes; the executed notebook keeps it all too.
            stdout_file=sys.stdout,
            stderr_file=sys.stderr,
            # The kernel listens on localhost only; its warning about unencrypted TCP
            # reads as an alarm on every run.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            kernel_manager_class=quiet_shutdown_manager(),
        )
    except papermill.PapermillExecutionError as err:
        error = f"{notebook} failed: {err.ename}: {err.evalue}"
    except DeadKernelError:
        error = (
            f"the {target} stage stopped: its notebook's kernel ({notebook}) died, which most "
            "often means the machine ran out of memory and the system killed it. To use less "
            f"memory, {STAGES[target].memory_hint}."
        )
        if target.startswith("train-"):
            error += " Finished epochs are kept: the same command resumes after them."
    run_dir = run_dir_touched_since(cfg, stage, started)
    if run_dir is None:
        run_dir = new_run_dir(cfg.output_dir, cfg.experiment, stage)
    executed = run_dir / "notebooks" / notebook
    executed.parent.mkdir(parents=True, exist_ok=True)
    if staging.is_file():  # a kernel that died early may leave no copy
        os.replace(staging, executed)
    if error:
        raise NotebookFailed(error, executed)
    return executed


@cache
def quiet_shutdown_manager() -> type:
    """jupyter_client's kernel manager, less the interrupt it sends before a shutdown.

    jupyter_client interrupts (SIGINT) every kernel it shuts down, in case code still
    runs. After papermill the kernel is idle: the interrupt lands between its message
    handlers, which log "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel" as
    the last line of every run. A kernel that does not stop is still killed after the
    shutdown wait; interrupts at any other time are sent as before.
    """
    from jupyter_client import AsyncKernelManager

    class QuietShutdownKernelManager(AsyncKernelManager):
        shutting_down_quietly = False

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
            self.shutting_down_quietly = True
            try:
                await super()._async_shutdown_kernel(now=now, restart=restart)
            finally:
                self.shutting_down_quietly = False

        async def _async_interrupt_kernel(self):
            if not self.shutting_down_quietly:
                await super()._async_interrupt_kernel()

        # AsyncKernelManager binds its public names to the base class's coroutines.
        shutdown_kernel = _async_shutdown_kernel

    return QuietShutdownKernelManager


def run_dir_touched_since(cfg: Config, stage: str, started: float) -> Path | None:
    """The newest run directory of ``stage`` that a file was written to after ``started``."""
    for run_dir in reversed(find_runs(cfg.output_dir, cfg.experiment, stage)):
        newest = max((p.stat().st_mtime for p in run_dir.rglob("*")), default=0.0)
        if newest >= started:
            return run_dir
    return None
