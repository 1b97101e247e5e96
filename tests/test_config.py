import json

import pytest

from transferlab.config import ConfigError, config_from_dict, load_config, parse_overrides

from .conftest import ROOT


@pytest.mark.parametrize("name", ["demo.yaml", "cifar10_resnet50.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.model.backbone == "resnet50"
    assert cfg.phase2.unfreeze_from == "conv5"


def test_real_experiment_settings():
    cfg = load_config(ROOT / "configs" / "cifar10_resnet50.yaml")
    assert (cfg.data.kind, cfg.model.weights, cfg.model.image_size) == ("cifar10", "imagenet", 224)
    assert cfg.data.subset_per_class * 10 == 8000


def test_overrides_from_string_dict_and_kwargs():
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        "phase1.epochs=3 data.splits=[0.6, 0.2, 0.2] model.augmentation=[flip,zoom]",
        train__batch_size=8,
    )
    assert cfg.phase1.epochs == 3
    assert cfg.data.splits == [0.6, 0.2, 0.2]
    assert cfg.model.augmentation == ["flip", "zoom"]
    assert cfg.train.batch_size == 8
    assert load_config(None, {"seed": 7}).seed == 7


def test_numbers_with_an_exponent_and_auto():
    """YAML 1.1 reads 1e-4 (no dot) as text; a float key takes it as the number it is."""
    cfg = load_config(
        None,
        "phase1.learning_rate=3e-3 sweep.learning_rate=[1e-4, 0.3] phase2.learning_rate=auto",
    )
    assert cfg.phase1.learning_rate == 0.003
    assert cfg.sweep.learning_rate == [0.0001, 0.3]
    assert cfg.phase2.learning_rate == "auto"
    with pytest.raises(ConfigError, match="must be a number or 'auto'"):
        load_config(None, "phase1.learning_rate=fast")


def test_override_parsing_keeps_brackets_together():
    assert parse_overrides("a.b=[1, 2] c='x y'") == {"a.b": [1, 2], "c": "x y"}
    assert parse_overrides(["model.weights=none"]) == {"model.weights": "none"}


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'phase1.epoch'.*'phase1.epochs'"):
        load_config(None, {"phase1.epoch": 3})
    with pytest.raises(ConfigError, match=r"'trian.batch_size'.*did you mean 'train.batch_size'"):
        load_config(None, "trian.batch_size=4")


def test_unknown_key_in_yaml_names_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(ConfigError, match=r"model.backbon.*x.yaml.*model.backbone"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"phase1.epochs": "three"}, r"phase1.epochs='three' must be a whole number"),
        ({"phase1.epochs": -1}, r"phase1.epochs=-1: must be at least 0"),
        ({"data.kind": "cifar"}, r"data.kind='cifar' is not allowed; did you mean 'cifar10'"),
        ({"train.batch_size": 0}, r"train.batch_size=0: must be at least 1"),
        ({"data.splits": [0.5, 0.2, 0.2]}, r"sums to 0.9"),
        ({"model.dropout": 1.5}, r"model.dropout=1.5: must be in \[0, 1\)"),
        ({"model.augmentation": ["flipp"]}, r"unknown augmentation 'flipp'; did you mean 'flip'"),
        ({"train.xla": "yes"}, r"train.xla='yes' must be true or false"),
        ({"data": 3}, r"'data' is a section"),
        ({"phase1.learning_rate": 5}, r"phase1.learning_rate=5.0: must be in \(0, 1\)"),
        (
            {"train.xla": True, "train.deterministic": True},
            r"cannot run together: Keras quietly turns XLA off",
        ),
        (
            {"phase2.warmup_epochs": 2},
            r"phase2.warmup_epochs=2 is used only by the cosine schedule; "
            r"phase2.schedule=constant would ignore it",
        ),
        (
            {"phase1.warmup_epochs": 1, "phase1.schedule": "onecycle"},
            r"phase1.schedule=onecycle would ignore it",
        ),
        (
            {"phase1.warmup_epochs": 1, "phase1.schedule": "plateau"},
            r"phase1.schedule=plateau would ignore it. Set phase1.schedule=cosine",
        ),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


@pytest.mark.parametrize(
    ("word", "precision"),
    [("off", "off"), ("false", "off"), ("on", "on"), ("true", "on"), ("bfloat16", "bfloat16")],
)
def test_mixed_precision_takes_switch_words_from_make(word, precision):
    # YAML reads on/off/true/false as booleans; the key is declared a switch.
    assert load_config(None, f"train.mixed_precision={word}").train.mixed_precision == precision


def test_mixed_precision_other_values_name_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"'fp16' is not allowed; did you mean 'float16'.*"
        r"auto, float16, bfloat16, off, on",
    ):
        load_config(None, "train.mixed_precision=fp16")


@pytest.mark.parametrize("augmentation", ["rotation", "zoom", "translation", "randaugment"])
def test_xla_refuses_augmentations_it_cannot_compile(augmentation):
    with pytest.raises(
        ConfigError,
        match=rf"train.xla=true cannot compile model.augmentation "
        rf"\['{augmentation}'\].*Set train.xla=false, or augment with flip",
    ):
        load_config(None, {"train.xla": True, "model.augmentation": ["flip", augmentation]})


def test_folder_kind_needs_data_dir():
    with pytest.raises(ConfigError, match="data.kind=folder needs data.data_dir"):
        load_config(None, {"data.kind": "folder"})


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_malformed_override():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, "phase1.epochs")


def test_saved_config_round_trips(cfg, tmp_path):
    path = cfg.save(tmp_path / "run" / "config.json")
    restored = config_from_dict(json.loads(path.read_text()))
    assert restored == cfg


def test_warmup_with_cosine_is_fine():
    cfg = load_config(None, {"phase1.warmup_epochs": 1, "phase1.schedule": "cosine"})
    assert cfg.phase1.warmup_epochs == 1


BOXES = {"data.kind": "csv", "data.data_dir": "x.csv", "data.boxes_column": "boxes"}


def test_fusion_with_boxes_refuses_augmentation_that_moves_pixels():
    with pytest.raises(
        ConfigError,
        match=r"model.augmentation \['flip', 'randaugment'\] moves the pixels, but a fusion "
        r"model reads the boxes \(data.boxes_column=boxes\) as numbers",
    ):
        load_config(
            None,
            {**BOXES, "model.inputs": "fusion", "model.augmentation": ["flip", "randaugment"]},
        )
    # Pixels that stay put, ROI (cropped before augmenting) and metadata alone are fine.
    load_config(None, {**BOXES, "model.inputs": "fusion", "model.augmentation": ["contrast"]})
    load_config(None, {**BOXES, "model.inputs": "roi", "model.augmentation": ["flip"]})
    load_config(
        None,
        {
            "data.kind": "csv",
            "data.data_dir": "x.csv",
            "data.metadata_columns": ["age"],
            "model.inputs": "fusion",
            "model.augmentation": ["flip", "zoom"],
        },
    )
