"""CIFAR-10: through keras.datasets, or from a local python or binary release."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data.core import DataError
from transferlab.data.dataset import ImageDataset

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def load_cifar10(cfg: Config) -> ImageDataset:
    """CIFAR-10 from ``data.data_dir`` when given, otherwise through keras.datasets."""
    if cfg.data.data_dir:
        (x_train, y_train), (x_test, y_test) = read_cifar10_dir(Path(cfg.data.data_dir))
    else:
        (x_train, y_train), (x_test, y_test) = download_cifar10()
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int64)
    table = pd.DataFrame(
        {
            "sample_id": [f"train:{i}" for i in range(len(x_train))]
            + [f"test:{i}" for i in range(len(x_test))],
            "path": "",
            "label": labels,
            "group": "",
            "fixed_split": [""] * len(x_train) + ["test"] * len(x_test),
        }
    )
    return ImageDataset("cifar10", list(CIFAR10_CLASSES), table, images)


def download_cifar10():
    import keras

    try:
        return keras.datasets.cifar10.load_data()
    except Exception as err:
        raise DataError(
            f"could not download CIFAR-10 through keras.datasets ({type(err).__name__}: {err}). "
            "On a machine without internet, download cifar-10-python.tar.gz elsewhere, unpack it "
            "and set data.data_dir to the folder holding cifar-10-batches-py "
            "(e.g. SET='data.data_dir=data/cifar10'), or run the offline demo: make demo"
        ) from None


def read_cifar10_dir(data_dir: Path):
    """Read CIFAR-10 from the python-pickle or the binary release, unpacked or as .tar.gz."""
    if not data_dir.exists():
        raise DataError(f"data.data_dir={data_dir} does not exist")
    for archive in sorted(data_dir.glob("cifar-10-*.tar.gz")):
        if not any(
            (data_dir / n).is_dir() for n in ("cifar-10-batches-py", "cifar-10-batches-bin")
        ):
            with tarfile.open(archive) as tar:
                tar.extractall(data_dir, filter="data")
    candidates = [data_dir, data_dir / "cifar-10-batches-py", data_dir / "cifar-10-batches-bin"]
    for folder in candidates:
        if (folder / "data_batch_1").is_file():
            return read_cifar10_pickles(folder)
        if (folder / "data_batch_1.bin").is_file():
            return read_cifar10_binaries(folder)
    raise DataError(
        f"no CIFAR-10 batches under {data_dir}: expected cifar-10-batches-py/data_batch_1..5 and "
        "test_batch (python version) or cifar-10-batches-bin/data_batch_1.bin (binary version)"
    )


# What a CIFAR-10 python batch may name: a dict of numpy arrays, lists and strings needs
# only these (numpy 1 and 2 spellings; _codecs.encode is how Python 3 pickles bytes).
BATCH_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles arrays, lists and strings only: a folder from elsewhere cannot run code."""

    def find_class(self, module, name):
        if (module, name) in BATCH_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it names {module}.{name}, which a CIFAR-10 batch never holds, so it was not "
            "loaded (unpickling it could run code)"
        )


def read_cifar10_pickles(folder: Path):
    def read(name: str):
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} is missing; re-extract cifar-10-python.tar.gz")
        try:
            with open(path, "rb") as f:
                batch = BatchUnpickler(f, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise DataError(
                f"CIFAR-10 file {path} is not a CIFAR-10 batch ({err}); re-extract it from "
                "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)"
            ) from None

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = read("test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), (x_test, y_test)


def read_cifar10_binaries(folder: Path):
    def read(name: str):
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} is missing; re-extract cifar-10-binary.tar.gz")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise DataError(f"CIFAR-10 file {path} is truncated ({raw.size} bytes); re-extract it")
        records = raw.reshape(-1, 3073)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, records[:, 0].astype(np.int64)

    train = [read(f"data_batch_{i}.bin") for i in range(1, 6)]
    x_test, y_test = read("test_batch.bin")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), (
        x_test,
        y_test,
    )
