"""Models: the backbone table, layer names, preprocessing, freezing, saving, weights errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from transferlab.models import (
    BACKBONES,
    ModelError,
    Preprocess,
    StochasticDepth,
    build_model,
    freeze_backbone,
    get_backbone,
    small_resnet,
    unfreeze_from,
)

SLOW_BACKBONES = {"resnet101", "resnet152"}


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BACKBONES else n for n in BACKBONES],
)
def test_every_backbone_builds_and_predicts_at_its_min_size(cfg, name):
    spec = BACKBONES[name]
    cfg.model.backbone = name
    cfg.model.image_size = spec.min_size
    model = build_model(cfg, num_classes=3, input_size=8)
    probs = model.predict(images(2, 8), verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    backbone = model.get_layer("backbone")
    # The table's Grad-CAM layer and every stage prefix exist in the real backbone.
    assert len(backbone.get_layer(spec.gradcam_layer).output.shape) == 4
    names = [layer.name for layer in backbone.layers]
    for stage, prefix in spec.stages.items():
        assert any(n.startswith(prefix) for n in names), (name, stage)
    assert not backbone.trainable_weights


def test_layer_names_follow_the_interface(cfg):
    cfg.model.augmentation = ["flip", "rotation", "contrast", "mixup"]
    cfg.model.dense_units = 8
    model = build_model(cfg, num_classes=4, input_size=16)
    names = [layer.name for layer in model.layers]
    assert names == [
        "image",
        "augmentation",
        "resize",
        "preprocess",
        "backbone",
        "head_pool",
        "head_dropout",
        "head_dense",
        "head_bn",
        "head_relu",
        "logits",
        "predictions",
    ]
    # Only per-image augmentations live in the model; MixUp is applied to batches.
    assert len(model.get_layer("augmentation").layers) == 3
    assert model.get_layer("resize").output.shape[1:3] == (32, 32)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers())


def test_augmentation_is_off_at_inference(cfg):
    cfg.model.augmentation = ["flip", "rotation", "zoom", "translation", "brightness", "contrast"]
    model = build_model(cfg, num_classes=3, input_size=8)
    x = images(4, 8)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
    ],
)
def test_preprocess_layer_matches_keras_applications(mode, reference):
    x = images(3, 5).astype("float32")
    expected = reference(x.copy())
    got = keras.ops.convert_to_numpy(Preprocess(mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_save_and_reload_in_safe_mode_predicts_identically(cfg, tmp_path):
    cfg.model.augmentation = ["flip", "randaugment"]
    cfg.model.dense_units = 8
    model = build_model(cfg, num_classes=3, input_size=8)
    unfreeze_from(model, "conv5")
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    x = images(5, 8)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [w.path for w in reloaded.trainable_weights] == [w.path for w in model.trainable_weights]


def test_small_resnet_reloads_with_se_and_stochastic_depth(tmp_path):
    model = small_resnet((16, 16, 3))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"StochasticDepth", "Multiply", "GlobalAveragePooling2D"} <= kinds
    model.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras", safe_mode=True)
    x = images(2, 16).astype("float32")
    np.testing.assert_array_equal(reloaded(x), model(x))


def test_stochastic_depth_drops_whole_samples_only_when_training():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((64, 2, 2, 3), dtype="float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    dropped = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = dropped.reshape(64, -1)
    # Each sample is either dropped (0) or kept and rescaled (1 / keep), never mixed.
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()
    assert 10 < (per_sample[:, 0] == 0).sum() < 54


def test_frozen_small_resnet_has_no_stochastic_depth(cfg):
    cfg.model.backbone, cfg.model.weights, cfg.model.image_size = "small_resnet", "none", 16
    model = build_model(cfg, num_classes=3, input_size=16)
    backbone = model.get_layer("backbone")
    x = images(32, 16).astype("float32")
    # Frozen (phase 1): training computes the features the cached phase 1 computes once.
    # With stochastic depth on, some of 32 samples would lose a block (chance ~1 - 1e-6).
    np.testing.assert_array_equal(backbone(x, training=True), backbone(x, training=False))
    unfreeze_from(model, "conv5")
    drops = {la.name: la.trainable for la in backbone.layers if isinstance(la, StochasticDepth)}
    assert drops["conv5_block2_drop"] and not drops["conv4_block2_drop"]


def test_unfreeze_from_conv5_trains_conv5_only_and_keeps_batchnorm_frozen(cfg):
    model = build_model(cfg, num_classes=3, input_size=8)
    backbone = model.get_layer("backbone")
    unfreeze_from(model, "conv5")
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable and all(layer.name.startswith("conv5_") for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    conv5_convs = [
        la for la in backbone.layers if la.name.startswith("conv5_") and la.name.endswith("_conv")
    ]
    assert all(layer.trainable for layer in conv5_convs)
    unfreeze_from(model, "conv4")
    assert backbone.get_layer("conv4_block1_1_conv").trainable
    assert not backbone.get_layer("conv3_block4_3_conv").trainable
    unfreeze_from(model, "all")
    assert backbone.get_layer("conv1_conv").trainable
    assert not backbone.get_layer("conv1_bn").trainable
    freeze_backbone(model)
    assert not backbone.trainable_weights
    assert model.get_layer("logits").trainable


def test_unknown_stage_names_the_nearest(cfg):
    model = build_model(cfg, num_classes=3, input_size=8)
    with pytest.raises(ModelError, match="did you mean 'conv5'"):
        unfreeze_from(model, "conv6")


def test_unknown_backbone_names_the_nearest(cfg):
    with pytest.raises(ModelError, match="did you mean 'resnet50'"):
        get_backbone("resnet5")
    cfg.model.backbone = "mobilenet_v2"
    with pytest.raises(ModelError, match="did you mean 'mobilenetv2'"):
        build_model(cfg, num_classes=3, input_size=8)


def test_missing_weights_file_is_a_clear_error(cfg, tmp_path):
    cfg.model.weights = str(tmp_path / "nope.h5")
    with pytest.raises(ModelError, match=r"no such file.*'imagenet', 'none'"):
        build_model(cfg, num_classes=3, input_size=8)


def test_local_weights_file_is_loaded_and_a_mismatch_is_a_clear_error(cfg, tmp_path):
    source = small_resnet((32, 32, 3), name="backbone")
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    cfg.model.backbone = "small_resnet"
    cfg.model.weights = str(path)
    model = build_model(cfg, num_classes=3, input_size=32)
    for loaded, saved in zip(model.get_layer("backbone").weights, source.weights, strict=True):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    cfg.model.backbone = "mobilenetv2"
    with pytest.raises(ModelError, match="does not fit a mobilenetv2 backbone"):
        build_model(cfg, num_classes=3, input_size=32)


def test_failed_imagenet_download_says_how_to_pass_a_local_file(cfg, monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    cfg.model.weights = "imagenet"
    with pytest.raises(ModelError, match=r"model\.weights=path/to/file\.h5"):
        build_model(cfg, num_classes=3, input_size=8)
    cfg.model.backbone = "small_resnet"
    with pytest.raises(ModelError, match="has no ImageNet weights"):
        build_model(cfg, num_classes=3, input_size=8)


def easy_images(per_class: int = 12, size: int = 16):
    """Three classes of noisy images, each dominated by one colour channel."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 80, (3 * per_class, size, size, 3)).astype(np.uint8)
    y = np.repeat(np.arange(3), per_class)
    for label in range(3):
        x[y == label, :, :, label] = rng.integers(170, 256, (per_class, size, size))
    return x, y


def test_small_resnet50_learns_easy_images(cfg):
    keras.utils.set_random_seed(0)
    cfg.model.dropout = 0.0
    # The dense head's BatchNorm tames the large features of a random-init backbone.
    cfg.model.dense_units = 32
    x, y = easy_images()
    model = build_model(cfg, num_classes=3, input_size=16)
    model.compile(
        keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x, y, batch_size=12, epochs=5, verbose=0)
    assert history.history["accuracy"][-1] >= 0.97
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy >= 0.97


def test_every_configurable_image_augmentation_has_a_layer():
    from transferlab.config.schema import IMAGE_AUGMENTATIONS
    from transferlab.models import AUGMENTATION_LAYERS

    assert set(AUGMENTATION_LAYERS) == set(IMAGE_AUGMENTATIONS)


def test_the_augmentations_xla_refuses_are_the_ones_keras_cannot_compile():
    from transferlab.config.schema import XLA_INCOMPATIBLE_AUGMENTATIONS
    from transferlab.models import AUGMENTATION_LAYERS

    def compiles(make) -> bool:
        model = keras.Sequential([keras.Input((8, 8, 3)), make()])
        model.compile(loss="mse", jit_compile=True)  # Keras turns it off when it cannot
        return model.jit_compile

    uncompilable = {n for n, make in AUGMENTATION_LAYERS.items() if not compiles(make)}
    assert uncompilable == set(XLA_INCOMPATIBLE_AUGMENTATIONS)
