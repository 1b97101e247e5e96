import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.config import load_config
from transferlab.data import DataError, load_dataset, read_image

from .conftest import write_image


@pytest.fixture
def with_data(cfg):
    """Return a function that points the test config at other data."""

    def make(kind, data_dir, **extra):
        return load_config(
            None,
            {
                "output_dir": cfg.output_dir,
                "data.kind": kind,
                "data.data_dir": str(data_dir),
                "model.weights": "none",
                **extra,
            },
        )

    return make


def write_fake_cifar10_python(root, per_batch=20, protocol=pickle.DEFAULT_PROTOCOL):
    """The real python-pickle layout: data_batch_1..5 and test_batch, channel-first rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, 0] = labels  # red channel of pixel (0, 0) encodes the label, to check the layout
        batch = {b"data": data, b"labels": labels, b"batch_label": name.encode()}
        raw = pickle.dumps(batch, protocol=protocol)
        if protocol == 0:
            # As numpy 1 (which pickled the real batches) names its array rebuilder.
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)
    return root


def test_digits_are_rgb_uint8():
    ds = load_dataset(load_config(None, {"data.kind": "digits"}))
    assert ds.images.shape == (1797, 8, 8, 3)
    assert ds.images.dtype == np.uint8
    assert ds.images.max() == 255
    assert ds.class_names == [str(i) for i in range(10)]
    assert np.array_equal(ds.images[..., 0], ds.images[..., 2])


def test_cifar10_from_python_batches(tmp_path, with_data):
    root = write_fake_cifar10_python(tmp_path / "cifar")
    ds = load_dataset(with_data("cifar10", root))
    assert ds.images.shape == (120, 32, 32, 3)
    assert ds.class_names[0] == "airplane"
    # Channel-first rows were transposed to HWC: pixel (0, 0) red holds the label.
    assert np.array_equal(ds.images[:, 0, 0, 0], ds.table["label"].to_numpy())
    assert (ds.table["fixed_split"] == "test").sum() == 20


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar10_batches_of_every_pickle_protocol(tmp_path, with_data, protocol):
    root = write_fake_cifar10_python(tmp_path / "cifar", per_batch=2, protocol=protocol)
    ds = load_dataset(with_data("cifar10", root))
    assert ds.images.shape == (12, 32, 32, 3)


class RunsCode:
    """Unpickling it creates a file: what any code in a pickle could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_cifar10_batch_that_would_run_code_is_refused(tmp_path, with_data):
    root = write_fake_cifar10_python(tmp_path / "cifar", per_batch=2)
    marker = tmp_path / "never_made"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": RunsCode(marker)}
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(
        DataError,
        match=r"data_batch_2 is not a CIFAR-10 batch \(it names pathlib.Path.touch, which a "
        r"CIFAR-10 batch never holds, so it was not loaded",
    ):
        load_dataset(with_data("cifar10", root))
    assert not marker.exists()


def test_cifar10_from_binary_batches(tmp_path, with_data):
    folder = tmp_path / "cifar" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.zeros((10, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(10)
        records[:, 1] = np.arange(10) * 20  # red of pixel (0, 0)
        records.tofile(folder / name)
    ds = load_dataset(with_data("cifar10", tmp_path / "cifar"))
    assert ds.images.shape == (60, 32, 32, 3)
    assert np.array_equal(ds.images[:, 0, 0, 0], ds.table["label"].to_numpy() * 20)


def test_cifar10_subset_is_balanced_and_keeps_test(tmp_path, with_data):
    root = write_fake_cifar10_python(tmp_path / "cifar")
    ds = load_dataset(with_data("cifar10", root, **{"data.subset_per_class": 3}))
    pool = ds.table[ds.table["fixed_split"] == ""]
    assert pool["label"].value_counts().tolist() == [3] * 10
    assert (ds.table["fixed_split"] == "test").sum() == 20


def test_cifar10_bad_dirs(tmp_path, with_data):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(with_data("cifar10", tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_dataset(with_data("cifar10", tmp_path / "empty"))
    root = write_fake_cifar10_python(tmp_path / "broken")
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 batch"):
        load_dataset(with_data("cifar10", root))


def test_folder_lists_files_without_loading_pixels(image_folder, with_data):
    ds = load_dataset(with_data("folder", image_folder))
    assert ds.class_names == ["blue", "green", "red"]
    assert len(ds.table) == 36 and ds.images is None
    assert ds.table["path"].str.endswith((".png", ".jpg")).all()
    pixels = ds.load_images(ds.table["sample_id"][:2], size=16)
    assert pixels.shape == (2, 16, 16, 3) and pixels.dtype == np.uint8


def test_folder_skips_corrupt_truncated_and_non_image_files(image_folder, with_data):
    (image_folder / "red" / "notes.txt").write_text("not an image")
    (image_folder / "red" / "fake.png").write_bytes(b"this is not a png")
    good = (image_folder / "green" / "green_1.png").read_bytes()
    (image_folder / "green" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="skipped 3 file"):
        ds = load_dataset(with_data("folder", image_folder))
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in ds.skipped}
    assert set(reasons) == {"notes.txt", "fake.png", "cut.png"}
    assert "not an image file" in reasons["notes.txt"]
    assert "not a readable image" in reasons["cut.png"]
    assert len(ds.table) == 36


def test_folder_bad_layouts(tmp_path, with_data):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(with_data("folder", tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(with_data("folder", tmp_path / "empty"))
    root = tmp_path / "one_empty_class"
    write_image(root / "cat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (root / "dog").mkdir()
    (root / "dog" / "readme.md").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*dog has no usable images"):
        load_dataset(with_data("folder", root))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_odd_image_modes_become_rgb_uint8(tmp_path, mode):
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    if mode == "I;16":
        path = tmp_path / "grey16.png"
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(path)
    else:
        path = write_image(tmp_path / f"img{suffix}", pixels, mode)
    image = read_image(path)
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8
    if mode == "I;16":
        assert np.array_equal(image[..., 0], pixels[..., 0])


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "none.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DataError, match="cannot read image"):
        read_image(tmp_path / "bad.jpg")


def write_label_csv(path, rows, header="path,label,group"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


def test_csv_single_file_with_groups_and_missing_files(image_folder, with_data):
    rows = [
        (f"images/red/red_{i}.png" if i % 2 else f"images/red/red_{i}.jpg", "red", f"s{i % 4}")
        for i in range(12)
    ]
    rows += [
        (f"images/blue/blue_{i}.png" if i % 2 else f"images/blue/blue_{i}.jpg", "blue", f"s{i % 4}")
        for i in range(12)
    ]
    rows.append(("images/blue/gone.png", "blue", "s1"))
    csv = write_label_csv(image_folder.parent / "labels.csv", rows)
    with pytest.warns(UserWarning, match="skipped 1 file"):
        ds = load_dataset(with_data("csv", csv, **{"data.group_column": "group"}))
    assert ds.class_names == ["blue", "red"]
    assert len(ds.table) == 24
    assert set(ds.table["group"]) == {"s0", "s1", "s2", "s3"}
    assert ds.skipped == [
        {"path": str(image_folder.parent / "images/blue/gone.png"), "reason": "file does not exist"}
    ]


def test_csv_ready_made_splits_and_unknown_label(image_folder, with_data):
    root = image_folder.parent / "splits_csv"
    path = lambda c, i: f"../images/{c}/{c}_{i}.png"  # noqa: E731
    write_label_csv(
        root / "train.csv",
        [(path(c, i), c) for c in ("red", "green") for i in (1, 3, 5)],
        "path,label",
    )
    write_label_csv(root / "val.csv", [(path(c, 7), c) for c in ("red", "green")], "path,label")
    write_label_csv(root / "test.csv", [(path(c, 9), c) for c in ("red", "green")], "path,label")
    ds = load_dataset(with_data("csv", root))
    assert ds.table["fixed_split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    write_label_csv(root / "val.csv", [(path("blue", 7), "blue")], "path,label")
    with pytest.raises(DataError, match=r"labels \['blue'\] appear only in val/test"):
        load_dataset(with_data("csv", root))


def test_csv_missing_columns(tmp_path, with_data):
    csv = write_label_csv(tmp_path / "l.csv", [("a.png", "x")], "file,label")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['path'\].*data.path_column"):
        load_dataset(with_data("csv", csv))


def test_csv_path_listed_twice_names_the_lines(image_folder, with_data):
    rows = [(f"images/red/red_{i}.png", "red") for i in (1, 3, 5)]
    rows += [(f"images/blue/blue_{i}.png", "blue") for i in (1, 3)]
    rows.append(("./images/red/red_3.png", "blue"))  # the same file, written another way
    csv = write_label_csv(image_folder.parent / "labels.csv", rows, "path,label")
    with pytest.raises(
        DataError,
        match=r"1 image path\(s\) are listed more than once: images/red/red_3.png at "
        r"labels.csv line 3 and labels.csv line 7\. List each image once",
    ):
        load_dataset(with_data("csv", csv))


def test_csv_path_in_train_and_val_names_both_files(image_folder, with_data):
    root = image_folder.parent / "splits_csv"
    path = lambda c, i: f"../images/{c}/{c}_{i}.png"  # noqa: E731
    train = [(path(c, i), c) for c in ("red", "green") for i in (1, 3, 5)]
    write_label_csv(root / "train.csv", train, "path,label")
    write_label_csv(root / "val.csv", [(path("green", 7), "green"), train[1]], "path,label")
    with pytest.raises(DataError, match=r"red_3.png at train.csv line 3 and val.csv line 3"):
        load_dataset(with_data("csv", root))
