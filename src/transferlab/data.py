"""Datasets: CIFAR-10, a folder of class sub-folders, a CSV of paths, scikit-learn digits.

Every loader returns an ``ImageDataset``: a table with one row per sample
(sample_id, path, label, group, fixed_split), the class names, and, for small
datasets, the uint8 pixels in memory. File datasets keep only paths, so memory
stays flat as a folder grows; the input pipeline decodes them on the fly.
"""

from __future__ import annotations

import pickle
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from transferlab.config import Config

if TYPE_CHECKING:
    from transferlab.inputs import SideInputs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
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
SPLIT_NAMES = ("train", "val", "test")


class DataError(ValueError):
    """Data that cannot be used as it is; the message says what to change."""


@dataclass
class ImageDataset:
    name: str
    class_names: list[str]
    # Columns: sample_id, path (files only), label (int), group, fixed_split ("" if free).
    table: pd.DataFrame
    # uint8 (N, H, W, 3), row-aligned with ``table``; None for file datasets.
    images: np.ndarray | None = None
    # Files left out while scanning, as {"path": ..., "reason": ...}.
    skipped: list[dict] = field(default_factory=list)
    # Metadata and boxes of CSV datasets that name them (data.metadata_columns, boxes_column).
    side: SideInputs | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def rows(self, sample_ids) -> np.ndarray:
        """Row positions of ``sample_ids`` in the table."""
        index = pd.Index(self.table["sample_id"])
        positions = index.get_indexer(list(sample_ids))
        if (positions < 0).any():
            missing = [s for s, p in zip(sample_ids, positions, strict=True) if p < 0][:5]
            raise DataError(
                f"split lists samples that the {self.name} dataset no longer has (e.g. {missing}); "
                "delete the splits folder to make new splits"
            )
        return positions

    def load_images(self, sample_ids, size: int | None = None) -> np.ndarray:
        """uint8 pixels of the given samples, resized to ``size`` if given."""
        rows = self.rows(sample_ids)
        if self.in_memory:
            images = self.images[rows]
            if size and images.shape[1:3] != (size, size):
                images = np.stack([resize_image(im, size) for im in images])
            return images
        paths = self.table["path"].to_numpy()[rows]
        return np.stack(
            [resize_image(read_image(p), size) if size else read_image(p) for p in paths]
        )


def load_dataset(cfg: Config) -> ImageDataset:
    """Load the dataset the config names (``data.kind``)."""
    loaders = {
        "cifar10": load_cifar10,
        "folder": load_folder,
        "csv": load_csv,
        "digits": load_digits,
    }
    dataset = loaders[cfg.data.kind](cfg)
    dataset.name = cfg.dataset_name
    if cfg.data.subset_per_class:
        dataset = take_subset(dataset, cfg.data.subset_per_class, cfg.seed)
    return dataset


# --- images -----------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file as RGB uint8 (H, W, 3): grayscale, RGBA, palette, 16-bit."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_uint8(image)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit) grey: scale to 0..255 rather than clip.
        pixels = np.asarray(image, dtype=np.float64)
        maximum = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        grey = np.clip(pixels / maximum * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    # Alpha is dropped, not composited, to match tf.io.decode_image in the input pipeline.
    return np.asarray(image.convert("RGB"))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def check_image_file(path: Path) -> str | None:
    """Return why ``path`` is not a usable image, or None when it is."""
    try:
        with Image.open(path) as image:
            # draft() lets JPEGs decode at reduced scale: a fast full read that still
            # catches truncated files.
            image.draft("RGB", (64, 64))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    return None


# --- CIFAR-10 -----------------------------------------------------------------


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


def read_cifar10_pickles(folder: Path):
    def read(name: str):
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} is missing; re-extract cifar-10-python.tar.gz")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise DataError(f"CIFAR-10 file {path} is corrupt ({err}); re-extract it") from None

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


# --- digits --------------------------------------------------------------------


def load_digits(cfg: Config) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits as 8x8 RGB uint8: the offline demo dataset."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    grey = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    table = pd.DataFrame(
        {
            "sample_id": [f"digits:{i}" for i in range(len(images))],
            "path": "",
            "label": digits.target.astype(np.int64),
            "group": "",
            "fixed_split": "",
        }
    )
    return ImageDataset("digits", [str(c) for c in digits.target_names], table, images)


# --- folder of class sub-folders -------------------------------------------------


def load_folder(cfg: Config) -> ImageDataset:
    """One sub-folder per class; images are listed and checked, not kept in memory."""
    root = existing_dir(cfg.data.data_dir)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root} has no class sub-folders; arrange images as {root}/<class_name>/<image>.jpg"
        )
    rows, skipped = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        usable = 0
        for path in files:
            reason = file_problem(path)
            if reason:
                skipped.append({"path": str(path), "reason": reason})
                continue
            relative = path.relative_to(root).as_posix()
            rows.append((relative, str(path.resolve()), label, "", ""))
            usable += 1
        if usable == 0:
            raise DataError(
                f"class folder {class_dir} has no usable images (jpg, jpeg, png, bmp); "
                "add images or remove the folder"
            )
    table = pd.DataFrame(rows, columns=["sample_id", "path", "label", "group", "fixed_split"])
    report_skipped(skipped)
    return ImageDataset(root.name, [d.name for d in class_dirs], table, None, skipped)


def file_problem(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'}; use jpg, jpeg, png or bmp)"
    return check_image_file(path)


# --- CSV of paths and labels -------------------------------------------------------


def load_csv(cfg: Config) -> ImageDataset:
    """A CSV of path,label[,group], or a folder with ready-made train/val/test CSVs."""
    source = Path(cfg.data.data_dir)
    if source.is_dir():
        split_files = {name: source / f"{name}.csv" for name in SPLIT_NAMES}
        present = {n: p for n, p in split_files.items() if p.is_file()}
        if not present:
            raise DataError(
                f"{source} holds no train.csv/val.csv/test.csv; point data.data_dir at one CSV "
                "file to split, or add those files"
            )
        if "train" not in present or "val" not in present:
            raise DataError(
                f"{source} needs at least train.csv and val.csv (found {sorted(present)})"
            )
        frames = [read_label_csv(p, cfg).assign(fixed_split=n) for n, p in present.items()]
        frame = pd.concat(frames, ignore_index=True)
    elif source.is_file():
        frame = read_label_csv(source, cfg).assign(fixed_split="")
    else:
        raise DataError(
            f"data.data_dir={source} does not exist; give a CSV file or a folder of CSVs"
        )
    return table_to_dataset(frame, cfg, name=source.stem)


def read_label_csv(path: Path, cfg: Config) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read CSV {path}: {err}") from None
    side_columns = list(cfg.data.metadata_columns)
    if cfg.data.boxes_column:
        side_columns.append(cfg.data.boxes_column)
    needed = [cfg.data.path_column, cfg.data.label_column, *side_columns]
    if cfg.data.group_column:
        needed.append(cfg.data.group_column)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"CSV {path} lacks column(s) {missing}; it has {list(frame.columns)}. "
            "Rename them or set data.path_column / data.label_column / data.group_column "
            "(or data.metadata_columns / data.boxes_column)"
        )
    base = path.parent
    paths = [p if Path(p).is_absolute() else str(base / p) for p in frame[cfg.data.path_column]]
    return pd.DataFrame(
        {
            "sample_id": frame[cfg.data.path_column],
            "path": paths,
            "label_name": frame[cfg.data.label_column].str.strip(),
            "group": frame[cfg.data.group_column] if cfg.data.group_column else "",
            # Where each row came from, for error messages about its metadata or boxes.
            "line": [f"{path.name} line {i + 2}" for i in range(len(frame))],
            **{column: frame[column] for column in side_columns},
        }
    )


def table_to_dataset(frame: pd.DataFrame, cfg: Config, name: str) -> ImageDataset:
    empty = frame["label_name"] == ""
    if empty.any():
        rows = (frame.index[empty] + 2).tolist()[:10]
        raise DataError(f"{int(empty.sum())} CSV row(s) have an empty label (lines {rows})")
    class_names = class_list(frame)
    unknown = sorted(set(frame["label_name"]) - set(class_names))
    if unknown:
        raise DataError(
            f"labels {unknown} appear only in val/test CSVs, not in train.csv; "
            f"known classes: {class_names}"
        )
    keep, skipped = [], []
    for path in frame["path"]:
        reason = "file does not exist" if not Path(path).is_file() else file_problem(Path(path))
        keep.append(reason is None)
        if reason:
            skipped.append({"path": path, "reason": reason})
    report_skipped(skipped)
    frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise DataError("no CSV row points at a usable image; check the paths (see skipped list)")
    frame["label"] = frame["label_name"].map({c: i for i, c in enumerate(class_names)})
    frame["path"] = [str(Path(p).resolve()) for p in frame["path"]]
    table = frame[["sample_id", "path", "label", "group", "fixed_split"]].copy()
    table["label"] = table["label"].astype(np.int64)
    side = None
    if cfg.data.metadata_columns or cfg.data.boxes_column:
        from transferlab.inputs import read_side_inputs

        side = read_side_inputs(frame, cfg, frame["line"])
    return ImageDataset(name, class_names, table, None, skipped, side)


def class_list(frame: pd.DataFrame) -> list[str]:
    """Classes from the training rows (all rows when no split is fixed), sorted."""
    train = frame[frame["fixed_split"].isin(["", "train"])]
    return sorted(set(train["label_name"]))


# --- shared helpers --------------------------------------------------------------------


def existing_dir(data_dir: str | None) -> Path:
    if not data_dir:
        raise DataError("data.data_dir is not set; point it at your image folder")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data.data_dir={root} does not exist or is not a folder")
    return root


def report_skipped(skipped: list[dict]) -> None:
    if skipped:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        warnings.warn(
            f"skipped {len(skipped)} file(s), listed in skipped.csv in the splits folder: "
            f"{examples}",
            stacklevel=3,
        )


def take_subset(dataset: ImageDataset, per_class: int, seed: int) -> ImageDataset:
    """Keep at most ``per_class`` free (non-test) samples of each class; fixed test rows stay."""
    table = dataset.table
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(table), dtype=bool)
    keep[(table["fixed_split"] == "test").to_numpy()] = True
    pool = table["fixed_split"] != "test"
    for label in range(dataset.num_classes):
        rows = np.flatnonzero(pool & (table["label"] == label))
        keep[rng.permutation(rows)[:per_class]] = True
    rows = np.flatnonzero(keep)
    images = dataset.images[rows] if dataset.in_memory else None
    subset = table.iloc[rows].reset_index(drop=True)
    side = dataset.side.take(rows) if dataset.side else None
    return ImageDataset(dataset.name, dataset.class_names, subset, images, dataset.skipped, side)
