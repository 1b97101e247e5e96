"""Training: both phases on tiny data; freezing, feature caching, resume after SIGKILL, Mirrored."""

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
from sklearn.metrics import f1_score

from tests.conftest import ROOT, ctrl_c_at_epoch, demo_config
from transferlab.config import load_config
from transferlab.data import load_dataset
from transferlab.data.pipeline import input_size_for, labels_of
from transferlab.data.splits import prepare_splits
from transferlab.models import load_model
from transferlab.runs import METRIC_COLUMNS, PhasePaths
from transferlab.training import TrainingError, train_phase
from transferlab.training.optim import OneCycle, make_schedule

# Ten digits per class: 70 train, 15 val, 15 test images, 8x8 pixels resized to 32.
TINY = {
    "data.subset_per_class": 10,
    "model.image_size": 32,
    "train.batch_size": 16,
    "train.monitor": "val_accuracy",
}


def tiny_config(root: Path, **overrides):
    return demo_config(root, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def val_images(cfg):
    dataset = load_dataset(cfg)
    split = prepare_splits(cfg, dataset).val
    size = input_size_for(cfg, dataset)
    return dataset.load_images(split["sample_id"], size), labels_of(dataset, split)


def weights_by_path(model) -> dict[str, np.ndarray]:
    return {w.path: np.array(w.numpy()) for w in model.weights}


@pytest.fixture(scope="module")
def two_phases(tmp_path_factory):
    """Phase 1 end to end (augmentation on, so no feature cache), then phase 2 from conv5."""
    root = tmp_path_factory.mktemp("two_phases")
    cfg = tiny_config(
        root, model__augmentation=["flip"], phase1__epochs=2, phase2__epochs=1, phase1__patience=0
    )
    start = build_start_model(cfg)
    phase1 = train_phase(cfg, "phase1")
    phase2 = train_phase(cfg, "phase2")
    return cfg, start, phase1, phase2


def build_start_model(cfg):
    """The model phase 1 starts from: same seed, same build order as train_phase."""
    from transferlab.models import build_model

    keras.utils.set_random_seed(cfg.seed)
    return weights_by_path(build_model(cfg, num_classes=10, input_size=8))


def test_phase1_leaves_the_backbone_bit_identical(two_phases):
    cfg, start, phase1, _ = two_phases
    trained = weights_by_path(load_model(phase1.model_path))
    backbone = [p for p in start if not p.startswith(("logits", "head_"))]
    assert len(backbone) > 300  # every conv kernel, BN gamma/beta and moving mean/variance
    for path in backbone:
        np.testing.assert_array_equal(trained[path], start[path], err_msg=path)
    assert not np.array_equal(trained["logits/kernel"], start["logits/kernel"])


def last_checkpoint(cfg, phase: str):
    """The model a phase trained last, from the checkpoint its state file names."""
    folder = Path(cfg.checkpoints_dir) / cfg.model_name
    state = json.loads((folder / f"{phase}_state.json").read_text())
    return load_model(folder / state["last_file"])


def test_phase2_changes_conv5_and_head_only_and_no_batchnorm_statistics(two_phases):
    cfg, _, phase1, phase2 = two_phases
    before = load_model(phase1.model_path)
    after = last_checkpoint(cfg, "phase2")
    changed = {
        w.path
        for w, v in zip(before.weights, after.weights, strict=True)
        if not np.array_equal(w.numpy(), v.numpy())
    }
    layer_of = {w.path: w.path.split("/")[-2] for w in before.weights}
    assert changed, "phase 2 changed nothing"
    assert all(layer_of[p].startswith("conv5_") or layer_of[p] == "logits" for p in changed)
    assert any(layer_of[p].startswith("conv5_") for p in changed)
    assert any(layer_of[p] == "logits" for p in changed)
    bn_weights = [p for p in layer_of if layer_of[p].endswith("_bn")]
    assert bn_weights and not changed & set(bn_weights)


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_evaluate_on_val_reproduces_the_best_epoch(two_phases, phase):
    """make evaluate SET='eval.split=val' gives back what metrics.csv says of the best epoch."""
    from transferlab.evaluation import evaluate

    cfg, _, *results = two_phases
    result = dict(zip(["phase1", "phase2"], results, strict=True))[phase]
    if result.summary.get("kept_phase1"):
        result = results[0]  # phase 2 never beat phase 1: phase 1's model is the best
    history = pd.read_csv(result.run_dir / "metrics.csv").set_index("epoch")
    best = history.loc[result.best_epoch]
    measured = evaluate(cfg, model_path=result.model_path, split="val").metrics
    assert measured["num_samples"] == len(prepare_splits(cfg, load_dataset(cfg)).val)
    assert measured["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert measured["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert measured["macro_f1"] == pytest.approx(best["val_macro_f1"], abs=1e-4)


def test_run_directory_files(two_phases):
    cfg, _, phase1, phase2 = two_phases
    for result, epochs in ((phase1, 2), (phase2, 1)):
        run = result.run_dir
        assert run.name.endswith(f"_demo_{result.phase}")
        metrics = pd.read_csv(run / "metrics.csv")
        assert list(metrics.columns) == METRIC_COLUMNS
        assert metrics["epoch"].tolist() == list(range(1, epochs + 1))
        assert metrics[["val_accuracy", "val_macro_f1", "accuracy"]].stack().between(0, 1).all()
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("kept_phase1"):
            assert summary["best_epoch"] == 0  # no epoch beat phase 1's best
        else:
            assert summary["best_epoch"] == int(metrics["val_accuracy"].idxmax()) + 1
            assert summary["best_metrics"]["val_accuracy"] == pytest.approx(
                metrics["val_accuracy"].max()
            )
        assert summary["stop_reason"] == "completed"
        assert summary["epochs_run"] == epochs
        assert (
            summary["total_params"] == summary["trainable_params"] + summary["non_trainable_params"]
        )
        assert summary["num_classes"] == 10 and summary["class_names"][0] == "0"
        assert summary["versions"]["keras"] == keras.__version__
        assert summary["input_size"] == 8 and summary["image_size"] == 32
        assert summary["feature_cached"] is False
        assert json.loads((run / "config.json").read_text())["experiment"] == "demo"
        assert (run / "figures" / "training_curves.png").stat().st_size > 1000
        # Digits skip no file: the list is there, empty, with its header.
        assert (run / "skipped.csv").read_text().strip() == "path,reason"
    s1, s2 = (json.loads((r.run_dir / "summary.json").read_text()) for r in (phase1, phase2))
    # Phase 1 trains the head only; phase 2 adds conv5's kernels.
    assert s1["trainable_params"] == 2048 * 10 + 10
    assert s2["trainable_params"] > 10 * s1["trainable_params"]
    # Phase 2 had to beat phase 1's best to count: the summary says which model won.
    assert s2["phase1_best"] == pytest.approx(phase1.best_metrics["val_accuracy"])
    if s2["kept_phase1"]:
        assert phase2.model_path == phase1.model_path and phase2.best_epoch == 0
        assert s2["model_path"] is None  # it wrote no model of its own
    else:
        assert phase2.best_metrics["val_accuracy"] > s2["phase1_best"]


def test_val_macro_f1_is_computed_over_the_whole_validation_set(two_phases):
    cfg, _, _, phase2 = two_phases
    images, labels = val_images(cfg)
    # The model phase 2's one epoch ended with, whether or not it beat phase 1.
    predicted = last_checkpoint(cfg, "phase2").predict(images, verbose=0).argmax(axis=1)
    row = pd.read_csv(phase2.run_dir / "metrics.csv").iloc[0]
    expected = f1_score(labels, predicted, average="macro", labels=range(10), zero_division=0)
    assert row["val_macro_f1"] == pytest.approx(expected, abs=1e-5)
    assert row["val_accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-6)


def test_feature_cached_phase1_matches_end_to_end(tmp_path):
    results = {}
    for cached in (True, False):
        cfg = tiny_config(
            tmp_path / str(cached),
            train__cache_features=cached,
            model__dropout=0.0,
            phase1__epochs=3,
            phase1__patience=0,
        )
        result = train_phase(cfg, "phase1")
        images, _ = val_images(cfg)
        results[cached] = (result, load_model(result.model_path).predict(images, verbose=0))
    (cached_run, cached_probs), (full_run, full_probs) = results[True], results[False]
    assert cached_run.summary["feature_cached"] and not full_run.summary["feature_cached"]
    assert cached_run.best_epoch == full_run.best_epoch
    np.testing.assert_allclose(cached_probs, full_probs, atol=1e-4)
    cached_times = pd.read_csv(cached_run.run_dir / "metrics.csv")["epoch_time"]
    full_times = pd.read_csv(full_run.run_dir / "metrics.csv")["epoch_time"]
    # Once traced, a cached epoch skips the backbone entirely.
    assert cached_times.iloc[-1] < 0.5 * full_times.iloc[-1]


def test_a_fine_tune_that_never_beats_phase1_keeps_phase1s_model(tmp_path):
    from transferlab.evaluation import default_model_path

    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        phase1__epochs=3,
        phase2__epochs=1,
        # A learning rate this high wrecks the backbone: phase 2 cannot beat phase 1.
        phase2__optimizer="sgd",
        phase2__learning_rate=0.9,
        phase2__unfreeze_from="all",
    )
    phase1 = train_phase(cfg, "phase1")
    phase2 = train_phase(cfg, "phase2")
    summary = phase2.summary
    assert summary["kept_phase1"] is True and summary["best_model_phase"] == "phase1"
    assert phase2.best_epoch == 0 and phase2.model_path == phase1.model_path
    line = str(phase2)  # the line the terminal and the notebook print
    assert "no epoch of 1 beat phase 1's best" in line and "nan" not in line
    assert f"kept phase 1's model {phase1.model_path}" in line
    # No worse phase 2 model is written, and its summary names none.
    assert summary["model_path"] is None
    assert not PhasePaths.of(cfg, "phase2").best.exists()
    assert default_model_path(cfg) == phase1.model_path
    from transferlab.evaluation import evaluate

    assert evaluate(cfg).metrics["model_phase"] == "phase1"  # evaluation says which
    history = pd.read_csv(phase2.run_dir / "metrics.csv")
    assert (history["val_accuracy"] <= summary["phase1_best"]).all()


def test_phase2_without_a_phase1_model_says_what_to_run(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="make train-phase1"):
        train_phase(cfg, "phase2")


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    import transferlab.training.phase as phase_module

    real_compile = phase_module.compile_model

    def compile_with_nan_loss(model, cfg, optimizer, steps_per_execution=1):
        real_compile(model, cfg, optimizer, steps_per_execution)
        model.compile(optimizer=model.optimizer, loss=lambda y, p: keras.ops.mean(p) * np.nan)
        return model

    monkeypatch.setattr(phase_module, "compile_model", compile_with_nan_loss)
    cfg = tiny_config(tmp_path, model__backbone="small_resnet")
    with pytest.raises(TrainingError, match=r"loss became NaN in epoch 1.*learning_rate"):
        train_phase(cfg, "phase1")
    summary = json.loads(next(Path(cfg.output_dir).glob("runs/*/summary.json")).read_text())
    assert summary["stop_reason"] == "nan_loss"


def test_ctrl_c_saves_and_the_next_run_resumes(tmp_path):
    cfg = tiny_config(
        tmp_path, model__backbone="small_resnet", phase1__epochs=4, phase1__patience=0
    )
    with ctrl_c_at_epoch(3):
        first = train_phase(cfg, "phase1")
    assert first.stop_reason == "interrupted" and first.epochs_run == 2
    second = train_phase(cfg, "phase1")
    assert second.run_dir == first.run_dir
    assert second.stop_reason == "completed" and second.epochs_run == 4
    assert pd.read_csv(second.run_dir / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_resuming_cached_phase1_on_other_backbone_weights_is_a_clear_error(tmp_path):
    from transferlab.models import build_backbone

    weights = tmp_path / "backbone.weights.h5"
    cfg = tiny_config(
        tmp_path,
        model__backbone="small_resnet",
        model__weights=str(weights),
        phase1__epochs=4,
        phase1__patience=0,
    )
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        build_backbone("small_resnet", "none", 32).save_weights(weights)
        if seed == 1:
            with ctrl_c_at_epoch(3):
                assert train_phase(cfg, "phase1").stop_reason == "interrupted"
    # Same config, other weights in the same file: the head's features would not match.
    with pytest.raises(TrainingError, match="outputs of other frozen layers.*Delete .*state.json"):
        train_phase(cfg, "phase1")


def test_own_callbacks_run_after_the_epoch_checkpoint_is_written(tmp_path):
    cfg = tiny_config(tmp_path, model__backbone="small_resnet", phase1__epochs=2)
    state_file = Path(cfg.checkpoints_dir) / "demo" / "phase1_state.json"
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch + 1, json.loads(state_file.read_text())["epoch"]))

    train_phase(cfg, "phase1", callbacks=[Watch()])
    assert seen == [(1, 1), (2, 2)]


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
    from transferlab.runs import PhasePaths
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
