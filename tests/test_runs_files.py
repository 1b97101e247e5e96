"""Atomic writes: the file appears whole, with the permissions open() would give it."""

from __future__ import annotations

import os
import stat

import pytest

from transferlab.runs import write_json, write_text, write_with


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # what open() makes under it
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_permissions(tmp_path, umask_027):
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert mode(tmp_path / "plain.txt") == umask_027
    assert mode(write_text(tmp_path / "a.txt", "x")) == umask_027
    assert mode(write_json(tmp_path / "a.json", {"a": 1})) == umask_027

    def save(tmp):
        # Keras, matplotlib and pandas open the temporary file they are given with "wb".
        with open(tmp, "wb") as f:
            f.write(b"model bytes")

    saved = write_with(tmp_path / "models" / "m_phase1_best.keras", save)
    assert mode(saved) == umask_027
    assert saved.read_bytes() == b"model bytes"


def test_a_saved_keras_model_gets_the_umask_permissions(tmp_path, umask_027):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert mode(write_with(tmp_path / "m.keras", model.save)) == umask_027


def test_a_failed_write_leaves_no_file(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_with(tmp_path / "x.txt", fail)
    assert list(tmp_path.iterdir()) == []
