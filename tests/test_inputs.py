"""Metadata and box columns of CSV datasets: parsing, padding, errors and fix-ups."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_image
from tests.side_data import box_task, metadata_task
from transferlab.config import ConfigError, load_config
from transferlab.data import DataError, load_dataset
from transferlab.data.side import parse_boxes


def csv_cfg(cfg, path, **overrides):
    cfg.data.kind = "csv"
    cfg.data.data_dir = str(path)
    for key, value in overrides.items():
        setattr(cfg.data, key, value)
    return cfg


def small_csv(tmp_path, rows: list[str], header: str = "path,label,age,boxes"):
    """Two 40x20 (w x h) images per row list entry; rows give everything after the path."""
    for i in range(len(rows)):
        write_image(tmp_path / f"im{i}.png", np.zeros((20, 40, 3), np.uint8))
    text = "\n".join([header] + [f"im{i}.png,{row}" for i, row in enumerate(rows)])
    (tmp_path / "labels.csv").write_text(text + "\n")
    return tmp_path / "labels.csv"


def test_parse_boxes_accepts_both_spellings():
    assert parse_boxes("1,2,3,4; 5 6 7 8") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert parse_boxes("[[1, 2, 3, 4], [5, 6, 7, 8]]") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert parse_boxes("[0.1, 0.2, 0.3, 0.4]") == [(0.1, 0.2, 0.3, 0.4)]
    assert parse_boxes("") == [] and parse_boxes("[]") == []


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "[[1,2,3,4]", "1,2,3,4,5", "1,2,nan,4"])
def test_malformed_boxes_name_the_line(tmp_path, cfg, text):
    path = small_csv(tmp_path, ['a,30,"0,0,5,5"', f'b,40,"{text}"'])
    with pytest.raises(DataError, match=r"labels.csv line 3: cannot read boxes"):
        load_dataset(csv_cfg(cfg, path, boxes_column="boxes"))


def test_boxes_become_relative_padded_and_masked(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"10,5,20,10"', "b,40,", 'a,50,"[[0,0,40,20],[4,2,8,4]]"'])
    dataset = load_dataset(csv_cfg(cfg, path, boxes_column="boxes", max_boxes=3))
    side = dataset.side
    assert side.boxes.shape == (3, 3, 4)
    np.testing.assert_allclose(side.boxes[0, 0], [0.25, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(side.box_mask, [[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(side.boxes[2, 1], [0.1, 0.1, 0.2, 0.2])
    assert side.fixups == []


def test_relative_boxes_are_kept(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"0.1,0.2,0.3,0.4"', 'b,40,"0,0,1,1"'])
    dataset = load_dataset(csv_cfg(cfg, path, boxes_column="boxes", box_units="relative"))
    np.testing.assert_allclose(dataset.side.boxes[0, 0], [0.1, 0.2, 0.3, 0.4])


def test_negative_size_is_an_error(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"10,5,-20,10"', "b,40,"])
    with pytest.raises(DataError, match=r"line 2: box .* width or height -20"):
        load_dataset(csv_cfg(cfg, path, boxes_column="boxes"))


def test_box_wholly_outside_is_an_error_naming_units(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"50,5,10,10"', "b,40,"])
    with pytest.raises(DataError, match=r"outside its 40x20 image .*data.box_units"):
        load_dataset(csv_cfg(cfg, path, boxes_column="boxes"))
    # Pixel boxes read as relative units lie outside the 1x1 unit square.
    path = small_csv(tmp_path, ['a,30,"5,5,10,10"', "b,40,"])
    with pytest.raises(DataError, match="relative units"):
        load_dataset(csv_cfg(cfg, path, boxes_column="boxes", box_units="relative"))


def test_partly_outside_is_clipped_and_reported(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"30,-5,20,10"', "b,40,"])
    with pytest.warns(UserWarning, match="1 box.* clipped"):
        dataset = load_dataset(csv_cfg(cfg, path, boxes_column="boxes"))
    np.testing.assert_allclose(dataset.side.boxes[0, 0], [0.75, 0.0, 0.25, 0.25])
    assert "clipped" in dataset.side.fixups[0]


def test_more_boxes_than_max_keeps_the_largest_and_reports(tmp_path, cfg):
    path = small_csv(tmp_path, ['a,30,"0,0,4,4; 0,0,20,10; 0,0,8,8"', "b,40,"])
    with pytest.warns(UserWarning, match="more than data.max_boxes=2"):
        dataset = load_dataset(csv_cfg(cfg, path, boxes_column="boxes", max_boxes=2))
    np.testing.assert_allclose(dataset.side.boxes[0, :, 2] * 40, [20, 8])


def test_metadata_text_is_an_error(tmp_path, cfg):
    path = small_csv(tmp_path, ["a,30,", "b,forty,"])
    with pytest.raises(DataError, match=r"'age' holds text .*line 3: 'forty'"):
        load_dataset(csv_cfg(cfg, path, metadata_columns=["age"]))


def test_missing_metadata_is_reported_and_kept_as_nan(tmp_path, cfg):
    path = small_csv(tmp_path, ["a,30,", "b,NA,", "a,12.5,"])
    with pytest.warns(UserWarning, match="1 missing value"):
        dataset = load_dataset(csv_cfg(cfg, path, metadata_columns=["age"]))
    np.testing.assert_array_equal(np.isnan(dataset.side.metadata[:, 0]), [False, True, False])


def test_missing_column_is_named(tmp_path, cfg):
    path = small_csv(tmp_path, ["a,30,", "b,40,"])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['height'\]"):
        load_dataset(csv_cfg(cfg, path, metadata_columns=["height"]))


def test_side_inputs_follow_subsets_and_fixtures(tmp_path, cfg):
    path = metadata_task(tmp_path / "meta", count=20)
    dataset = load_dataset(csv_cfg(cfg, path, metadata_columns=["age", "noise"]))
    labels = dataset.table["label"].to_numpy()
    names = np.array(dataset.class_names)[labels]
    assert ((dataset.side.metadata[:, 0] > 50) == (names == "old")).all()
    cfg.data.subset_per_class = 3
    subset = load_dataset(cfg)
    assert subset.side.metadata.shape == (6, 2)
    cfg.data.subset_per_class, cfg.data.metadata_columns = None, []
    boxes = load_dataset(csv_cfg(cfg, box_task(tmp_path / "box", count=8), boxes_column="boxes"))
    assert boxes.side.box_mask[:, 0].all() and not boxes.side.box_mask[:, 1:].any()


def test_config_checks_inputs_against_data(tmp_path):
    with pytest.raises(ConfigError, match="fusion needs data.metadata_columns"):
        load_config(None, {"model.inputs": "fusion"})
    with pytest.raises(ConfigError, match="roi needs data.boxes_column"):
        load_config(None, {"model.inputs": "roi"})
    with pytest.raises(ConfigError, match="need data.kind=csv"):
        load_config(None, {"data.metadata_columns": ["age"]})
    with pytest.raises(ConfigError, match="mixes images only"):
        load_config(
            None,
            "data.kind=csv data.data_dir=x.csv data.boxes_column=b model.inputs=roi "
            "model.augmentation=[mixup]",
        )
