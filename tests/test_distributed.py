"""Training across processes: the JAX backend with keras.distribution, on loopback CPUs.

One launch trains phase 1 as two processes, another as one process (which is also
the test that a phase trains under KERAS_BACKEND=jax); both see the same global
batches, so they must end with the same weights.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import ROOT, demo_config, write_image
from transferlab.data import load_dataset, prepare_splits
from transferlab.launch import launch, process_environments
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

TRAIN_SCRIPT = """
    import json, os, sys
    from pathlib import Path

    sys.path.insert(0, {root!r})
    import transferlab.data.decoded as cache
    import transferlab.data.pipeline as pipeline

    decoded = []
    read_image = pipeline.read_image

    def recording(path, size):  # which images this process decoded
        decoded.append(path)
        return read_image(path, size)

    pipeline.read_image = cache.read_image = recording
    from tests.test_distributed import small_config
    from transferlab.training import train_phase

    result = train_phase(small_config(Path(sys.argv[1]), sys.argv[2]), "phase1")
    index = os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    Path(sys.argv[1], f"decoded_{{index}}.json").write_text(json.dumps(decoded))
    print("RESULT", index, result.summary["backend"], result.summary["processes"], flush=True)
"""


def small_config(root: Path, images: str):
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
            "phase1.epochs": 1,
            "phase1.learning_rate": 0.01,
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


def train(tmp_path: Path, name: str, images: Path, processes: int) -> Path:
    root = tmp_path / name
    root.mkdir()
    script = root / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT.format(root=str(ROOT))))
    status = launch([sys.executable, str(script), str(root), str(images)], processes)
    assert status == 0, f"the {processes}-process run failed (its output is above)"
    return root


def test_two_processes_train_like_one_on_disjoint_shares(tmp_path):
    """Two JAX processes on loopback end phase 1 with the one-process run's weights.

    The one-process run is also the test that a phase trains under KERAS_BACKEND=jax.
    """
    images = two_colour_folder(tmp_path / "images")
    one = train(tmp_path, "one", images, processes=1)
    two = train(tmp_path, "two", images, processes=2)

    cfg = small_config(one, str(images))
    dataset = load_dataset(cfg)
    rows = dataset.rows(prepare_splits(cfg, dataset).train["sample_id"])
    train_paths = set(dataset.table["path"].to_numpy()[rows])
    assert len(train_paths) == 2 * GLOBAL_BATCH
    decoded = [json.loads((two / f"decoded_{i}.json").read_text()) for i in (0, 1)]
    shares = [set(paths) & train_paths for paths in decoded]
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
    for a, b in zip(alone.weights, together.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


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
