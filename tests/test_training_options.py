"""Training options: schedules, precision, XLA, augmentation, resume after SIGKILL, Mirrored.

Split from test_training.py so the two files run side by side in `make test`'s workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_training import build_start_model, tiny_config, val_images, weights_by_path
from transferlab.config import load_config
from transferlab.data import load_dataset
from transferlab.data.splits import prepare_splits
from transferlab.models import load_model
from transferlab.runs import PhasePaths
from transferlab.training import train_phase
from transferlab.training.optim import OneCycle, make_schedule


def test_training_options_run_and_the_schedule_moves(tmp_path):
    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        # Every augmentation XLA can compile (the others are refused with train.xla).
        model__augmentation=["flip", "contrast", "brightness", "mixup", "cutmix"],
        phase1__epochs=2,
        phase1__optimizer="adamw",
        phase1__schedule="onecycle",
        phase1__unfreeze_from="conv5",
        train__label_smoothing=0.1,
        train__class_weight="balanced",
        train__clip_norm=1.0,
    )
    start = build_start_model(cfg)
    result = train_phase(cfg, "phase1")
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert np.isfinite(metrics["loss"]).all()
    assert metrics["learning_rate"].nunique() == 2
    # phase1.unfreeze_from: end to end, conv5 trained, the stages before it untouched.
    assert not result.summary["feature_cached"]
    trained = weights_by_path(load_model(result.model_path))
    changed = {p for p, w in start.items() if not np.array_equal(w, trained[p])}
    assert any("conv5_" in p for p in changed)
    assert not any(f"conv{stage}_" in p for p in changed for stage in (1, 2, 3, 4))


@pytest.mark.parametrize(
    ("mode", "capabilities", "policy"),
    [
        ("auto", [], "float32"),  # a CPU
        ("auto", [(7, 5)], "mixed_float16"),  # T4
        ("auto", [(8, 0), (9, 0)], "mixed_bfloat16"),  # A100 and H100
        ("auto", [(8, 0), (7, 0)], "mixed_float16"),  # the oldest GPU decides
        ("bfloat16", [], "mixed_bfloat16"),
        ("on", [(9, 0)], "mixed_float16"),
        ("off", [(9, 0)], "float32"),
    ],
)
def test_precision_policy_per_device(mode, capabilities, policy):
    from transferlab.training.runtime import choose_policy

    assert choose_policy(mode, capabilities) == policy


@pytest.fixture
def float32_afterwards():
    """Training sets Keras's global dtype policy; later tests expect float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_trains_and_its_model_reloads_in_float32(
    tmp_path, precision, float32_afterwards
):
    from transferlab.evaluation.gradcam import make_gradcam_heatmap
    from transferlab.models import compute_dtypes

    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        model__image_size=16,
        train__mixed_precision=precision,
        phase1__epochs=1,
    )
    # Feature-cached: the backbone computes the features in mixed precision, the head
    # trains in it, and the full model is saved with mixed-precision layers.
    result = train_phase(cfg, "phase1")
    assert result.summary["precision"] == f"mixed_{precision}"
    assert np.isfinite(pd.read_csv(result.run_dir / "metrics.csv")["loss"]).all()
    keras.mixed_precision.set_global_policy(f"mixed_{precision}")  # loading ignores it
    model = load_model(result.model_path)
    assert compute_dtypes(model) == {"float32"}
    assert "float16" in str(compute_dtypes(load_model(result.model_path, f"mixed_{precision}")))
    images, _ = val_images(cfg)
    assert np.isfinite(model.predict(images, verbose=0)).all()
    heatmaps = make_gradcam_heatmap(images[:2], model, "conv5_block2_out")
    assert heatmaps.dtype == np.float32 and np.isfinite(heatmaps).all()


def test_xla_compiles_with_every_augmentation_it_accepts(tmp_path):
    from transferlab.config.schema import AUGMENTATIONS, XLA_INCOMPATIBLE_AUGMENTATIONS

    accepted = [a for a in AUGMENTATIONS if a not in XLA_INCOMPATIBLE_AUGMENTATIONS]
    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        model__image_size=16,
        model__augmentation=accepted,
        phase1__epochs=1,
        train__xla=True,
        train__batch_size=35,  # 70 training images: one batch shape, one XLA compile
    )
    result = train_phase(cfg, "phase1")
    assert result.summary["xla"] is True  # what Keras compiled, not what was asked
    assert np.isfinite(pd.read_csv(result.run_dir / "metrics.csv")["loss"]).all()


def test_schedules():
    phase = load_config(None, {"phase1.schedule": "cosine", "phase1.warmup_epochs": 1}).phase1
    cosine = make_schedule(phase, steps_per_epoch=10)
    assert float(cosine(0)) == pytest.approx(phase.learning_rate / 100)
    assert float(cosine(10)) == pytest.approx(phase.learning_rate)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    one = OneCycle(1e-2, total_steps=100)
    values = [float(one(s)) for s in range(101)]
    assert values[0] == pytest.approx(1e-2 / 25) and max(values) == pytest.approx(1e-2)
    assert int(np.argmax(values)) == 30 and values[-1] == pytest.approx(1e-6)


def test_metrics_log_the_rate_an_epoch_trained_with_not_the_lowered_next_one(tmp_path):
    from transferlab.training.checkpoints import EpochCheckpoint, ResumablePlateau
    from transferlab.training.state import PhaseState

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    plateau = ResumablePlateau(monitor="val_accuracy", mode="max", factor=0.5, patience=1)
    state = PhaseState("phase1", str(tmp_path), "val_accuracy", {})
    paths = PhasePaths.of(tiny_config(tmp_path), "phase1")
    rows = []
    checkpoint = EpochCheckpoint(paths, state, rows, tmp_path / "m.csv", 0, plateau, write=False)
    for callback in (plateau, checkpoint):  # in train_phase's order
        callback.set_model(model)
        callback.on_train_begin()
    for epoch in range(3):  # no improvement after epoch 1: the plateau halves the rate
        for callback in (plateau, checkpoint):
            callback.on_epoch_end(epoch, {"loss": 1.0, "val_accuracy": 0.5})
    assert [row["learning_rate"] for row in rows] == pytest.approx([0.1, 0.1, 0.05])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.025)


def run_python(code: str, extra_env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


TRAIN_SCRIPT = """
    import sys
    sys.path.insert(0, "tests")
    from pathlib import Path
    from test_training import tiny_config
    from transferlab.training import train_phase
    cfg = tiny_config(Path({root!r}), **{overrides!r})
    print("RESULT", train_phase(cfg, "phase1"), flush=True)
"""


# Cached epochs take milliseconds: more of them leave time to kill the run mid-phase.
@pytest.mark.parametrize("cached, epochs", [(False, 6), (True, 40)], ids=["end_to_end", "cached"])
def test_a_run_killed_mid_phase_resumes_and_keeps_the_true_best(tmp_path, cached, epochs):
    overrides = {
        "model__backbone": "small_resnet",
        "train__cache_features": cached,
        "phase1__epochs": epochs,
        "phase1__patience": 0,
        "phase1__learning_rate": 0.01,
    }
    cfg = tiny_config(tmp_path, **overrides)
    state_file = Path(cfg.checkpoints_dir) / "demo" / "phase1_state.json"
    process = run_python(TRAIN_SCRIPT.format(root=str(tmp_path), overrides=overrides))
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, (
        f"the run ended before it could be killed:\n{process.stdout.read()}"
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state_file.read_text())["epoch"]
    assert 2 <= killed_at < epochs
    if cached:
        # Cached phase 1 writes its full best model once, at the end: the resume does it.
        assert not Path(cfg.models_dir, "demo_phase1_best.keras").exists()
    run_dir = Path(json.loads(state_file.read_text())["run_dir"])
    before = pd.read_csv(run_dir / "metrics.csv")
    before = before[before["epoch"] <= killed_at]

    result = train_phase(cfg, "phase1")

    assert result.run_dir == run_dir and result.epochs_run == epochs
    assert result.summary["feature_cached"] == cached
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == list(range(1, epochs + 1))  # none lost or repeated
    pd.testing.assert_frame_equal(metrics.iloc[: len(before)], before)
    best = int(metrics["val_accuracy"].idxmax()) + 1
    assert result.best_epoch == best
    images, labels = val_images(cfg)
    best_model = load_model(result.model_path)
    accuracy = (best_model.predict(images, verbose=0).argmax(axis=1) == labels).mean()
    assert accuracy == pytest.approx(metrics["val_accuracy"].max(), abs=1e-6)
    state = json.loads(state_file.read_text())
    last = keras.models.load_model(Path(cfg.checkpoints_dir) / "demo" / state["last_file"])
    # The optimizer's step count went on from the checkpoint: 5 steps per epoch.
    assert int(last.optimizer.iterations.numpy()) == epochs * 5


MIRRORED_SCRIPT = """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    sys.path.insert(0, "tests")
    from pathlib import Path
    from test_training import tiny_config
    from transferlab.training import train_phase
    overrides = dict(train__cache_features=False, phase1__epochs=2)
    cfg = tiny_config(Path({root!r}), model__backbone="small_resnet", **overrides)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = train_phase(cfg, "phase1", strategy=strategy)
    print("REPLICAS", result.summary["replicas"], "LOSS", result.best_metrics["loss"])
"""


def test_mirrored_strategy_over_two_cpu_devices_trains(tmp_path):
    """Two replicas, 15 validation images in batches of 16: no replica gets an empty batch.

    The validation metrics the two replicas logged equal one device's evaluation of the
    same model on the same images.
    """
    from transferlab.evaluation import evaluate

    process = run_python(MIRRORED_SCRIPT.format(root=str(tmp_path)))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    line = next(x for x in output.splitlines() if x.startswith("REPLICAS"))
    _, replicas, _, loss = line.split()
    assert replicas == "2" and np.isfinite(float(loss))

    cfg = tiny_config(
        tmp_path, model__backbone="small_resnet", train__cache_features=False, phase1__epochs=2
    )
    assert len(prepare_splits(cfg, load_dataset(cfg)).val) % 16 % 2 == 1  # sizes that don't divide
    run_dir = next(Path(cfg.output_dir, "runs").glob("*_phase1"))
    best_epoch = json.loads((run_dir / "summary.json").read_text())["best_epoch"]
    logged = pd.read_csv(run_dir / "metrics.csv").set_index("epoch").loc[best_epoch]
    one_device = evaluate(cfg, split="val").metrics
    assert one_device["accuracy"] == pytest.approx(logged["val_accuracy"], abs=1e-6)
    assert one_device["loss"] == pytest.approx(logged["val_loss"], rel=1e-4)


def test_a_multi_worker_tf_config_is_a_clear_error(tmp_path, monkeypatch):
    """Keras 3 cannot fit under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two real workers on loopback failed inside fit with a PerReplica conversion error;
    transferlab says so before any work starts.
    """
    from transferlab.training.runtime import UnsupportedStrategyError

    cluster = {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker"}}))
    cfg = tiny_config(tmp_path, model__backbone="small_resnet")
    with pytest.raises(UnsupportedStrategyError, match=r"2-task cluster.*keras-team/keras#20585"):
        train_phase(cfg, "phase1")
    assert not Path(cfg.models_dir, "demo_phase1_best.keras").exists()
