"""Training across processes: the JAX backend with keras.distribution, on loopback CPUs.

One launch trains phase 1 as two processes, another as one process (which is also
the test that a phase trains under KERAS_BACKEND=jax); both see the same global
batches, so they must end with the same weights. The two-process run killed after
epoch 1 and launched again must end with the uninterrupted run's weights; the
one-process run on cached features must log the end-to-end run's metrics.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, demo_config, write_image
from transferlab.data import load_dataset, prepare_splits
from transferlab.data.pipeline import batches_for_replicas
from transferlab.launch import launch, process_environments
from transferlab.runs import read_metrics
from transferlab.training.distributed import (
    ADDRESS,
    PROCESS_ID,
    PROCESSES,
    DistributedError,
    check_backend,
    check_batch,
)

# 2 classes x 20 images: 28 train (two batches of 14, split 7 + 7), 6 val, 6 test.
GLOBAL_BATCH = 14

# Set for a launch whose chief dies (SIGKILL) after committing this many epochs.
KILL_AFTER = "TRANSFERLAB_TEST_KILL_CHIEF_AFTER_EPOCH"

TRAIN_SCRIPT = """
    import functools, json, os, signal, sys
    from pathlib import Path

    sys.path.insert(0, {root!r})
    import transferlab.data.decoded as cache
    import transferlab.data.pipeline as pipeline
    import transferlab.models.backbones as backbones

    # small_resnet with one block per stage: across processes JAX checks every new
    # weight is the same in each process, a round trip per weight (half of them here).
    backbones.small_resnet = functools.partial(backbones.small_resnet, blocks_per_stage=1)

    decoded = []
    read_image = pipeline.read_image

    def recording(path, size):  # which images this process decoded
        decoded.append(path)
        return read_image(path, size)

    pipeline.read_image = cache.read_image = recording
    from tests.test_distributed import KILL_AFTER, small_config
    from transferlab.training import train_phase
    from transferlab.training.checkpoints import EpochCheckpoint

    index = os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    if os.environ.get(KILL_AFTER) and index == "0":
        real_begin = EpochCheckpoint.on_epoch_begin

        def on_epoch_begin(self, epoch, logs=None):  # the last epoch committed, the next not begun
            if epoch == int(os.environ[KILL_AFTER]):
                os.kill(os.getpid(), signal.SIGKILL)
            real_begin(self, epoch, logs)

        EpochCheckpoint.on_epoch_begin = on_epoch_begin
    cfg = small_config(Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))
    result = train_phase(cfg, "phase1")
    Path(sys.argv[1], f"decoded_{{index}}.json").write_text(json.dumps(decoded))
    print("RESULT", index, result.summary["backend"], result.summary["processes"], flush=True)
"""


def small_config(root: Path, images: str, overrides: dict | None = None):
    return demo_config(
        root,
        {
            "data.kind": "folder",
            "data.data_dir": images,
            "model.backbone": "small_resnet",
            "model.image_size": 32,
            "train.batch_size": GLOBAL_BATCH,
            "train.cache_features": False,
            "train.monitor": "val_accuracy",
            "phase1.epochs": 2,
            "phase1.learning_rate": 0.01,
            **(overrides or {}),
        },
    )


def two_colour_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(["red", "green"]):
        for i in range(20):
            pixels = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
            pixels[..., label] = 150 + 4 * i
            write_image(root / name / f"{name}_{i}.png", pixels)
    return root


def launch_phase1(root: Path, images: Path, processes: int, overrides: dict | None = None):
    """Phase 1 in ``root`` as ``processes`` JAX processes; returns the launch's exit status."""
    root.mkdir(exist_ok=True)
    script = root / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT.format(root=str(ROOT))))
    command = [sys.executable, str(script), str(root), str(images), json.dumps(overrides or {})]
    return launch(command, processes)


def train(tmp_path: Path, name: str, images: Path, processes: int, overrides=None) -> Path:
    root = tmp_path / name
    status = launch_phase1(root, images, processes, overrides)
    assert status == 0, f"the {processes}-process run failed (its output is above)"
    return root


@pytest.fixture(scope="module")
def compiled_once(tmp_path_factory):
    """One JAX compilation cache for every launch here: a launch after the first reuses
    the compiled model build and steps (measured: a one-process phase took 34 s cold,
    11 s warm). The cached programs are the ones a cold run compiles."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        env.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        yield


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory, compiled_once):
    """Phase 1 (2 epochs, end to end) under JAX as one process and as two."""
    tmp_path = tmp_path_factory.mktemp("jax_runs")
    images = two_colour_folder(tmp_path / "images")
    one = train(tmp_path, "one", images, processes=1)
    two = train(tmp_path, "two", images, processes=2)
    return images, one, two


def last_checkpoint(root: Path) -> keras.Model:
    """The phase's model after its last epoch, as its state file names it."""
    folder = root / "checkpoints" / "demo"
    state = json.loads((folder / "phase1_state.json").read_text())
    return keras.models.load_model(folder / state["last_file"])


def assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5, err_msg=x.path)


def test_two_processes_train_like_one_on_disjoint_shares(jax_runs):
    """Two JAX processes on loopback end phase 1 with the one-process run's weights.

    The one-process run is also the test that a phase trains under KERAS_BACKEND=jax.
    """
    images, one, two = jax_runs

    cfg = small_config(one, str(images))
    dataset = load_dataset(cfg)
    rows = dataset.rows(prepare_splits(cfg, dataset).train["sample_id"])
    train_paths = set(dataset.table["path"].to_numpy()[rows])
    assert len(train_paths) == 2 * GLOBAL_BATCH
    decoded = [json.loads((two / f"decoded_{i}.json").read_text()) for i in (0, 1)]
    assert all(len(paths) == len(set(paths)) for paths in decoded)  # each decoded once
    # Epoch 1's share: the first training images each process decoded (tf.data's
    # flat_map reads epoch 2's batches only after the last of epoch 1's).
    shares = [set([p for p in paths if p in train_paths][:GLOBAL_BATCH]) for paths in decoded]
    assert shares[0] and not shares[0] & shares[1]  # disjoint
    assert shares[0] | shares[1] == train_paths  # together, the whole split
    assert len(shares[0]) == len(shares[1]) == GLOBAL_BATCH  # half of every batch each

    summaries = [
        json.loads(next(Path(root, "outputs", "runs").glob("*_phase1/summary.json")).read_text())
        for root in (one, two)
    ]
    assert [s["backend"] for s in summaries] == ["jax", "jax"]
    assert [s["processes"] for s in summaries] == [1, 2]
    assert summaries[0]["best_metrics"]["val_accuracy"] == pytest.approx(
        summaries[1]["best_metrics"]["val_accuracy"], abs=1e-6
    )
    # One run folder: only the chief wrote one.
    assert len(list(Path(two, "outputs", "runs").glob("*_phase1"))) == 1

    alone, together = (
        keras.models.load_model(root / "models" / "demo_phase1_best.keras") for root in (one, two)
    )
    trained = {w.path for w in alone.trainable_weights}
    assert trained  # the head trained
    assert_same_weights(alone, together)


def test_two_processes_killed_after_an_epoch_resume_like_an_uninterrupted_run(
    jax_runs, tmp_path, capfd, monkeypatch
):
    """The chief dies (SIGKILL) after committing epoch 1 of 2 and the launcher stops the
    other process; the same command again resumes at epoch 2 and ends with the
    uninterrupted two-process run's weights: one run folder, one row per epoch."""
    images, _, uninterrupted = jax_runs
    root = tmp_path / "killed"
    monkeypatch.setenv(KILL_AFTER, "1")
    assert launch_phase1(root, images, processes=2) != 0
    monkeypatch.delenv(KILL_AFTER)
    killed_output = "".join(capfd.readouterr())
    folder = root / "checkpoints" / "demo"
    killed = json.loads((folder / "phase1_state.json").read_text())
    assert killed["epoch"] == 1 and not killed["finished"]

    assert launch_phase1(root, images, processes=2) == 0  # the same command again
    output = "".join(capfd.readouterr())
    assert "taking over the lock of a run that ended" in output
    assert f"resuming phase1 after epoch 1 in {killed['run_dir']}" in output
    assert "phase1 epoch 2/2" in output and "phase1 epoch 1/2" not in output
    # Keras's JAX trainer warns so when it reads data of unknown length to its end.
    assert "ran out of data" not in killed_output + output

    resumed = json.loads((folder / "phase1_state.json").read_text())
    assert resumed["finished"] and resumed["epoch"] == 2
    assert resumed["run_dir"] == killed["run_dir"]
    assert list(Path(root, "outputs", "runs").glob("*_phase1")) == [Path(killed["run_dir"])]
    assert [row["epoch"] for row in read_metrics(Path(killed["run_dir"], "metrics.csv"))] == [1, 2]
    assert (folder / "phase1.lock").read_text() == ""  # released
    left = sorted(p.name for p in folder.glob("*.keras"))
    assert left == sorted({resumed["last_file"], resumed["best_file"]})
    assert_same_weights(last_checkpoint(root), last_checkpoint(uninterrupted))


def test_one_jax_process_on_cached_features_logs_the_end_to_end_metrics(jax_runs, tmp_path, capfd):
    """Freeze once under KERAS_BACKEND=jax: phase 1's head trains on the backbone's
    pooled outputs, computed once and cached in float32, and logs what the end-to-end
    JAX run logged."""
    images, end_to_end, _ = jax_runs
    cached = train(tmp_path, "cached", images, 1, {"train.cache_features": True})
    assert "ran out of data" not in "".join(capfd.readouterr())
    summaries = [
        json.loads(next(Path(root, "outputs", "runs").glob("*_phase1/summary.json")).read_text())
        for root in (cached, end_to_end)
    ]
    assert summaries[0]["feature_cached"] and summaries[0]["cached_at"] == "head_pool"
    assert not summaries[1]["feature_cached"]
    assert summaries[0]["steps_per_execution"] == 2  # both steps of an epoch in one call
    rows = [read_metrics(Path(s["run_dir"], "metrics.csv")) for s in summaries]
    for column in ("loss", "val_loss"):
        got, expected = ([row[column] for row in r] for r in rows)
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=column)
    assert [r["val_accuracy"] for r in rows[0]] == [r["val_accuracy"] for r in rows[1]]


def test_each_process_decodes_its_own_half_of_every_batch(tmp_path, monkeypatch):
    """Process shares of the input: disjoint, covering the split, and batch k of the
    one-process run is the union of the processes' batches k (so the gradients agree)."""
    import transferlab.data.decoded as cache
    import transferlab.data.pipeline as pipeline

    images = two_colour_folder(tmp_path / "images")
    cfg = small_config(tmp_path, str(images))
    dataset = load_dataset(cfg)
    split = prepare_splits(cfg, dataset).train
    decoded: list[str] = []
    read_image = pipeline.read_image
    recording = lambda p, s: decoded.append(p) or read_image(p, s)  # noqa: E731
    monkeypatch.setattr(pipeline, "read_image", recording)
    monkeypatch.setattr(cache, "read_image", recording)

    def batches(shard):
        decoded.clear()
        monkeypatch.setattr(cache, "MEMORY", type(cache.MEMORY)())  # nothing decoded yet
        ds = pipeline.make_tf_dataset(
            dataset, split, GLOBAL_BATCH, 8, (3, 4), cfg.seed, drop_remainder=True, shard=shard
        )
        pixels = [x.numpy() for x, _ in ds]
        return pixels, list(decoded)

    whole, _ = batches((0, 1))
    (first, read_first), (second, read_second) = batches((0, 2)), batches((1, 2))
    assert len(whole) == len(first) == len(second) == 2  # one epoch (the 4th), 2 steps
    assert all(len(b) == GLOBAL_BATCH // 2 for b in first + second)
    for a, b, both in zip(first, second, whole, strict=True):
        np.testing.assert_array_equal(np.concatenate([a, b]), both)  # batch k, split in two
    mine, theirs = set(read_first), set(read_second)
    assert len(read_first) == len(mine) == len(theirs) == GLOBAL_BATCH and not mine & theirs
    assert len(mine | theirs) == len(split)  # together, the epoch covers the split


def test_validation_batches_for_several_devices_say_how_many_they_are():
    """Keras's JAX trainer reads batches of unknown count to their end and warns "Your
    input ran out of data" at every validation pass; re-batched for the devices (which
    unbatches), the count is known and true."""
    for count in (6, 15, 16, 17, 33):
        for replicas in (2, 3, 4):
            batches = batches_for_replicas(
                tf.data.Dataset.range(count).batch(16), count, 16, replicas
            )
            assert int(batches.cardinality()) == len(list(batches)), (count, replicas)


def test_each_process_gets_the_coordinator_its_count_and_its_own_id():
    envs = process_environments(3, 4567, environ={"PATH": "/bin"})
    assert [e[PROCESS_ID] for e in envs] == ["0", "1", "2"]
    assert {e[ADDRESS] for e in envs} == {"127.0.0.1:4567"}
    assert {e[PROCESSES] for e in envs} == {"3"}
    assert {e["KERAS_BACKEND"] for e in envs} == {"jax"}
    assert PROCESS_ID not in process_environments(1, 4567, environ={})[0]


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
    check_batch(16, processes=2, local_devices=4)
    with pytest.raises(DistributedError, match=r"batch_size=14 .* multiple of 4 .*batch_size=16"):
        check_batch(14, processes=2, local_devices=2)


def test_several_processes_under_tensorflow_say_to_use_jax(tmp_path, monkeypatch):
    monkeypatch.setenv(PROCESSES, "2")
    with pytest.raises(DistributedError, match="KERAS_BACKEND=jax"):
        check_backend(demo_config(tmp_path))
    monkeypatch.setenv(PROCESSES, "two")
    with pytest.raises(DistributedError, match="not a whole number"):
        check_backend(demo_config(tmp_path))


def test_processes_are_for_the_training_stages_only(capsys):
    from transferlab.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--processes", "2"])
    assert "use it with ('train-phase1', 'train-phase2')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-phase1", "--processes", "2", "--notebook"])
    assert "drop --notebook" in capsys.readouterr().err


def test_make_passes_processes_to_the_launcher():
    import subprocess

    dry_run = ["make", "-n", "--no-print-directory", "-C", str(ROOT), "train-phase2"]
    two = subprocess.run([*dry_run, "PROCESSES=2"], capture_output=True, text=True, check=True)
    one = subprocess.run(dry_run, capture_output=True, text=True, check=True)
    assert "transferlab train-phase2 --processes 2 --config" in two.stdout
    assert "transferlab train-phase2 --notebook --config" in one.stdout
