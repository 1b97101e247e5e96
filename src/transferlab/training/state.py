"""A phase's resumable state, and the one atomic commit that saves it after each epoch.

The state file names the checkpoint it belongs to. Each epoch's model is written
under a new name (``<phase>_e0007.keras``) and flushed to disk; only then does the
state file, itself written to a temporary name, flushed and renamed, point at it. A
kill at any moment leaves either the previous state with its checkpoint or the new
state with its checkpoint, never one epoch's model with another epoch's counters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.config import Config
from transferlab.runs import PhasePaths, read_json, write_text, write_with

# The config sections a phase's weights depend on; evaluation, report and benchmark
# settings (and the other phase's) can change without throwing an interrupted run away.
FINGERPRINT_SECTIONS = ("data", "model", "train")


@dataclass
class PhaseState:
    """Everything a resumed phase needs besides the checkpoint's weights and optimizer."""

    phase: str
    run_dir: str
    monitor: str
    # What this run is: the config keys its weights depend on, and (phase 2) the hash of
    # the phase-1 model it started from.
    fingerprint: dict
    start_model_hash: str = ""
    epoch: int = 0  # completed epochs, counted from 1
    best: float = -math.inf
    best_epoch: int = 0
    wait: int = 0  # epochs since the best, for early stopping
    stop_reason: str = ""
    finished: bool = False
    # Freeze once: whether the phase trains on its frozen prefix's cached outputs, and
    # the key of what they were computed from (a resumed run must compute the same).
    feature_cached: bool = False
    prefix_key: str = ""
    plateau: dict | None = None  # ReduceLROnPlateau's counters
    # File names, in the phase's checkpoint folder, of the last and the best checkpoint.
    last_file: str = ""
    best_file: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> PhaseState:
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(data, dict):
            # Written before freeze once keyed its cache: a resumed run computes the key.
            data = {k: v for k, v in data.items() if k != "feature_checksum"}
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(data, dict) or missing - set(data) or set(data) - names:
            raise ValueError("it does not hold a transferlab phase state")
        return cls(**data)


def fingerprint(cfg: Config, phase: str) -> dict:
    """The config keys a phase's weights depend on, as the state file holds them."""
    full = cfg.to_dict()
    keys = {name: full[name] for name in FINGERPRINT_SECTIONS}
    keys.update(seed=full["seed"], phase=full[phase])
    # Through JSON, so it compares equal to what the state file holds.
    return json.loads(json.dumps(keys))


def file_hash(path: Path) -> str:
    """SHA-1 of a file's bytes, read in chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state(paths: PhasePaths, expected: dict, start_model_hash: str = "") -> PhaseState | None:
    """The state of an interrupted run of this same phase, or None to start afresh.

    Says why when it starts afresh: a damaged state file or checkpoint, other settings,
    or (phase 2) another phase-1 model than the one the interrupted run started from.
    """
    if not paths.state.is_file():
        return None
    try:
        state = PhaseState.from_dict(read_json(paths.state))
    except (ValueError, TypeError) as err:
        return start_afresh(f"{paths.state} is damaged ({err})")
    if state.finished:
        return None
    if state.fingerprint != expected:
        changed = sorted(k for k in expected if state.fingerprint.get(k) != expected[k])
        return start_afresh(
            f"the interrupted {state.phase} in {paths.state} was run with other settings "
            f"({', '.join(changed)})"
        )
    if state.start_model_hash != start_model_hash:
        return start_afresh(
            f"phase 1's best model changed since the interrupted {state.phase} started from it"
        )
    for name in {state.last_file, state.best_file} - {""}:
        problem = checkpoint_problem(paths.folder / name)
        if problem:
            return start_afresh(f"its checkpoint {paths.folder / name} {problem}")
    return state


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint file cannot be resumed from, or None when it can."""
    import zipfile

    if not path.is_file():
        return "is missing"
    # A .keras file is a zip archive: a truncated or overwritten one fails its check.
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None or "config.json" not in archive.namelist():
                return "is damaged"
    except (zipfile.BadZipFile, OSError):
        return "is damaged (not a complete .keras file)"
    return None


def start_afresh(reason: str) -> None:
    print(f"[transferlab] {reason}: starting the phase afresh", flush=True)
    return None


def commit(state: PhaseState, paths: PhasePaths, model, improved: bool) -> None:
    """Save this epoch's checkpoint and then the state that names it, durably."""
    name = f"{state.phase}_e{state.epoch:04d}.keras"
    write_with(paths.folder / name, model.save, durable=True)
    state.last_file = name
    if improved:
        state.best_file = name
    write_text(paths.state, state.to_json(), durable=True)
    # Only now may older checkpoints go: the state no longer names them.
    for old in paths.folder.glob(f"{state.phase}_e*.keras"):
        if old.name not in (state.last_file, state.best_file):
            old.unlink(missing_ok=True)


def save_state(state: PhaseState, paths: PhasePaths) -> None:
    write_text(paths.state, state.to_json(), durable=True)


def new_state(cfg: Config, phase: str, run_dir: Path, start_model_hash: str = "") -> PhaseState:
    return PhaseState(
        phase=phase,
        run_dir=str(run_dir),
        monitor=cfg.train.monitor,
        fingerprint=fingerprint(cfg, phase),
        start_model_hash=start_model_hash,
    )


@dataclass
class PhaseLock:
    """One run per experiment and phase: a second one stops at once, naming the first.

    An OS file lock (flock) is held while the phase runs. The kernel drops it when the
    process ends, however it ends, so the lock of a killed run is taken over at once.
    """

    path: Path
    description: str
    handle: object = field(default=None, repr=False)

    def __enter__(self) -> PhaseLock:
        import fcntl
        import os
        import socket
        import sys
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open while the phase runs)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise PhaseLockedError(
                f"{self.description} is already running ({holder}); wait for it to finish "
                f"or stop it. Its lock is {self.path}"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            print(f"[transferlab] taking over the lock of a run that ended ({previous})")
        handle.seek(0)
        handle.truncate()
        command = " ".join(sys.argv) or "python"
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, command: {command}\n"
        )
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        # Emptied before release: a lock file with content means a run ended unexpectedly.
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.close()


class PhaseLockedError(RuntimeError):
    """The same phase of the same experiment is running in another process."""
