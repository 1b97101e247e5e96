"""Training: both phases on tiny data; freezing, feature caching, phase 2 keeping phase 1, Ctrl-C.

Options, precision, XLA, SIGKILL and Mirrored are in test_training_options.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from tests.conftest import ctrl_c_at_epoch, demo_config
from transferlab.data import load_dataset
from transferlab.data.pipeline import input_size_for, labels_of
from transferlab.data.splits import prepare_splits
from transferlab.models import load_model
from transferlab.runs import METRIC_COLUMNS, PhasePaths
from transferlab.training import TrainingError, train_phase

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
