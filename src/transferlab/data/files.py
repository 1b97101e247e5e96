"""Image files on disk: a folder of class sub-folders, or a CSV of paths and labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config import Config
from transferlab.data.core import SPLIT_NAMES, DataError, existing_dir, report_skipped
from transferlab.data.dataset import ImageDataset
from transferlab.data.scan import list_files, scan_files, stat_files
from transferlab.data.side import read_side_inputs
from transferlab.runs import splits_dir


def load_folder(cfg: Config) -> ImageDataset:
    """One sub-folder per class; images are listed and checked, not kept in memory."""
    root = existing_dir(cfg.data.data_dir)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root} has no class sub-folders; arrange images as {root}/<class_name>/<image>.jpg"
        )
    files = {d: list_files(d) for d in class_dirs}
    problems = scan_files([f for found in files.values() for f in found], scan_cache(cfg))
    # Paths are joined to the resolved root, not resolved one by one (a system call per
    # path component, which a folder of tens of thousands of files pays dearly).
    real_root = str(root.resolve())
    rows, skipped = [], []
    for label, class_dir in enumerate(class_dirs):
        usable = 0
        for path, _, _ in files[class_dir]:
            reason = problems[path]
            if reason:
                skipped.append({"path": path, "reason": reason})
                continue
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            rows.append((relative, os.path.join(real_root, relative), label, "", ""))
            usable += 1
        if usable == 0:
            raise DataError(
                f"class folder {class_dir} has no usable images (jpg, jpeg, png, bmp); "
                "add images or remove the folder"
            )
    table = pd.DataFrame(rows, columns=["sample_id", "path", "label", "group", "fixed_split"])
    report_skipped(skipped)
    return ImageDataset(
        root.name, [d.name for d in class_dirs], table, None, skipped, cache_dir=decoded_dir(cfg)
    )


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
    check_unique_paths(frame)
    return table_to_dataset(frame, cfg, name=source.stem)


def check_unique_paths(frame: pd.DataFrame) -> None:
    """Each image once: a path listed twice (in one CSV or two) is an error naming the lines."""
    lines: dict[str, tuple[str, list[str]]] = {}
    for path, written, where in zip(frame["path"], frame["sample_id"], frame["line"], strict=True):
        # normpath: "a.jpg" and "./a.jpg" name the same file.
        lines.setdefault(os.path.normpath(path), (written, []))[1].append(where)
    repeated = [f"{written} at {' and '.join(w)}" for written, w in lines.values() if len(w) > 1]
    if repeated:
        raise DataError(
            f"{len(repeated)} image path(s) are listed more than once: "
            f"{'; '.join(repeated[:3])}. List each image once, in one split, and delete the "
            "other lines"
        )


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
    problems = scan_files(stat_files(frame["path"].tolist()), scan_cache(cfg))
    keep, skipped = [], []
    for path in frame["path"]:
        reason = problems[path]
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
        side = read_side_inputs(frame, cfg, frame["line"])
    return ImageDataset(name, class_names, table, None, skipped, side, cache_dir=decoded_dir(cfg))


def class_list(frame: pd.DataFrame) -> list[str]:
    """Classes from the training rows (all rows when no split is fixed), sorted."""
    train = frame[frame["fixed_split"].isin(["", "train"])]
    return sorted(set(train["label_name"]))


def decoded_dir(cfg: Config) -> Path:
    """Decoded, resized images kept on disk when they do not fit in memory (data.decoded)."""
    return splits_dir(cfg) / "decoded"


def scan_cache(cfg: Config) -> Path:
    """The folder scan's results, kept beside the splits."""
    return splits_dir(cfg) / "scan.csv"
