"""Crash-consistent checkpoints: bit-exact resume after SIGKILL, damaged files, locks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_training import tiny_config
from tests.test_training_options import run_python
from transferlab.models import load_model
from transferlab.training import train_phase
from transferlab.training.state import PhaseLock, PhaseLockedError

# Deterministic, end to end (dropout and a random flip draw every epoch), 5 steps an epoch.
REPRODUCIBLE = {
    "model__backbone": "small_resnet",
    "model__augmentation": ["flip"],
    "train__deterministic": True,
    "phase1__epochs": 4,
    "phase1__patience": 0,
}

# Runs phase 1 in a fresh process that SIGKILLs itself at one point of epoch 3 (point
# None: no kill). Every run compared bit for bit starts in a fresh process, as a user's
# does: this pytest worker has run other tests' TensorFlow work before.
KILL_SCRIPT = """
    import os, signal, sys
    sys.path.insert(0, "tests")
    from pathlib import Path
    from test_training import tiny_config
    import transferlab.training.state as state_module
    from transferlab.training import train_phase
    from transferlab.training.checkpoints import EpochCheckpoint

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    point = {point!r}
    if point == "between epochs":  # epoch 2 committed, epoch 3 not begun
        real_begin = EpochCheckpoint.on_epoch_begin
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                die()
            real_begin(self, epoch, logs)
        EpochCheckpoint.on_epoch_begin = on_epoch_begin
    elif point == "mid epoch":  # two batches into epoch 3
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                die()
        EpochCheckpoint.on_train_batch_end = on_train_batch_end
    elif point == "during the checkpoint write":  # epoch 3's model written, its state not
        real_write = state_module.write_text
        def write_text(path, text, durable=False):
            if '"epoch": 3,' in text:
                die()
            return real_write(path, text, durable)
        state_module.write_text = write_text
    cfg = tiny_config(Path({root!r}), **{overrides!r})
    train_phase(cfg, "phase1")
"""


def final_weights(cfg) -> list[np.ndarray]:
    """Every weight of the phase's last checkpoint (the model after its last epoch)."""
    folder = Path(cfg.checkpoints_dir) / cfg.model_name
    state = json.loads((folder / "phase1_state.json").read_text())
    return [np.array(w) for w in load_model(folder / state["last_file"]).get_weights()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    run_in_fresh_process(root, None, returncode=0)
    return final_weights(tiny_config(root, **REPRODUCIBLE))


def run_in_fresh_process(root: Path, point: str | None, returncode: int) -> None:
    process = run_python(KILL_SCRIPT.format(root=str(root), overrides=REPRODUCIBLE, point=point))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == returncode, output


def kill_and_resume(root: Path, point: str):
    run_in_fresh_process(root, point, returncode=-9)  # it died by SIGKILL, where the test said
    cfg = tiny_config(root, **REPRODUCIBLE)
    # What a SIGKILL inside model.save leaves: a hidden, half-written temporary.
    folder = Path(cfg.checkpoints_dir) / cfg.model_name
    (folder / ".phase1_e0003.keras.0badf00d.keras").write_bytes(b"half a model")
    state_file = Path(cfg.checkpoints_dir) / "demo" / "phase1_state.json"
    state = json.loads(state_file.read_text())
    run_in_fresh_process(root, None, returncode=0)  # the resumed run
    return cfg, state, json.loads(state_file.read_text())


def check_bit_exact(cfg, final_state, uninterrupted) -> None:
    assert final_state["epoch"] == 4 and final_state["finished"]
    resumed = final_weights(cfg)
    assert len(resumed) == len(uninterrupted)
    for got, expected in zip(resumed, uninterrupted, strict=True):
        assert np.array_equal(got, expected)


def test_killed_during_the_checkpoint_write_resumes_bit_exact(tmp_path, uninterrupted):
    cfg, state, final_state = kill_and_resume(tmp_path, "during the checkpoint write")
    # The state on disk was still epoch 2's, naming epoch 2's checkpoint: never epoch 3's
    # model with epoch 2's counters.
    assert state["epoch"] == 2 and state["last_file"] == "phase1_e0002.keras"
    check_bit_exact(cfg, final_state, uninterrupted)
    # Only the checkpoints the final state names are left.
    folder = Path(cfg.checkpoints_dir) / "demo"
    left = sorted(p.name for p in folder.glob("*.keras"))
    final = json.loads((folder / "phase1_state.json").read_text())
    assert left == sorted({final["last_file"], final["best_file"]})
    # The killed writes' temporaries (the model's, planted; the state's, real) are gone.
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["between epochs", "mid epoch"])
def test_killed_anywhere_resumes_bit_exact(tmp_path, uninterrupted, point):
    cfg, state, final_state = kill_and_resume(tmp_path, point)
    assert state["epoch"] == 2
    check_bit_exact(cfg, final_state, uninterrupted)


def interrupted_run(tmp_path, **overrides):
    """A phase 1 stopped by Ctrl-C after 2 of 4 epochs; returns its config and state file."""
    from tests.conftest import ctrl_c_at_epoch

    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        phase1__epochs=4,
        phase1__patience=0,
        **overrides,
    )
    with ctrl_c_at_epoch(3):
        assert train_phase(cfg, "phase1").stop_reason == "interrupted"
    return cfg, Path(cfg.checkpoints_dir) / "demo" / "phase1_state.json"


def test_a_damaged_state_file_says_so_and_starts_afresh(tmp_path, capsys):
    cfg, state_file = interrupted_run(tmp_path)
    state_file.write_text('{"epoch": 2, "trunc')
    result = train_phase(cfg, "phase1")
    assert f"{state_file} is damaged" in capsys.readouterr().out
    assert result.epochs_run == 4 and result.stop_reason == "completed"


def test_a_damaged_checkpoint_says_so_and_starts_afresh(tmp_path, capsys):
    cfg, state_file = interrupted_run(tmp_path)
    checkpoint = state_file.parent / json.loads(state_file.read_text())["last_file"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    first_run = json.loads(state_file.read_text())["run_dir"]
    result = train_phase(cfg, "phase1")
    out = capsys.readouterr().out
    assert f"its checkpoint {checkpoint} is damaged" in out and "starting the phase afresh" in out
    assert str(result.run_dir) != first_run and result.epochs_run == 4


def test_changing_evaluation_or_report_keys_keeps_the_interrupted_run(tmp_path, capsys):
    cfg, state_file = interrupted_run(tmp_path)
    run_dir = json.loads(state_file.read_text())["run_dir"]
    cfg.eval.tta = 3
    cfg.report.day = 9
    cfg.phase2.epochs = 7
    result = train_phase(cfg, "phase1")
    assert str(result.run_dir) == run_dir
    assert "resuming phase1 after epoch 2" in capsys.readouterr().out
    # A key the weights depend on does start afresh, naming the section.
    cfg2, state_file2 = interrupted_run(tmp_path / "other")
    cfg2.phase1.learning_rate = 0.01
    train_phase(cfg2, "phase1")
    assert "other settings (phase)" in capsys.readouterr().out


def test_phase2_restarts_when_phase1_changed_under_it(tmp_path, capsys):
    from tests.conftest import ctrl_c_at_epoch

    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        phase1__epochs=1,
        phase2__epochs=3,
        phase2__patience=0,
    )
    train_phase(cfg, "phase1")
    with ctrl_c_at_epoch(2):
        assert train_phase(cfg, "phase2").stop_reason == "interrupted"
    cfg.phase1.epochs = 2  # phase 1 retrained: a new best model
    train_phase(cfg, "phase1")
    capsys.readouterr()
    result = train_phase(cfg, "phase2")
    assert "phase 1's best model changed" in capsys.readouterr().out
    assert result.epochs_run == 3


def test_a_second_run_of_the_same_phase_stops_at_once(tmp_path):
    lock = tmp_path / "phase1.lock"
    name = "phase1 of experiment 'demo'"
    running = PhaseLock(lock, name).__enter__()
    # flock locks belong to an open file: a second open here conflicts as a second
    # process would.
    with pytest.raises(PhaseLockedError, match=rf"{name} is already running \(pid \d+ on "):
        PhaseLock(lock, name).__enter__()
    running.__exit__(None, None, None)
    with PhaseLock(lock, name):  # released: the next run takes it
        pass


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    cfg = tiny_config(tmp_path, model__backbone="small_resnet", phase1__epochs=1)
    script = """
        import os, signal, sys
        from pathlib import Path
        from transferlab.training.state import PhaseLock
        PhaseLock(Path({lock!r}), "phase1").__enter__()
        os.kill(os.getpid(), signal.SIGKILL)
    """
    lock = Path(cfg.checkpoints_dir) / "demo" / "phase1.lock"
    process = run_python(script.format(lock=str(lock)))
    process.communicate(timeout=120)
    assert "pid" in lock.read_text()  # the killed run's lock file is left behind
    result = train_phase(cfg, "phase1")
    assert result.stop_reason == "completed"
