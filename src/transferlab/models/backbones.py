"""The backbone table: one entry per architecture, and the from-scratch small ResNet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from transferlab.config import ConfigError
from transferlab.config.schema import did_you_mean
from transferlab.models.custom_layers import StochasticDepth


class ModelError(ConfigError):
    """A backbone, weights file or model file that cannot be used; the message says why."""


# --- the from-scratch ResNet for 32x32 images ---------------------------------------


def small_resnet(
    input_shape=(32, 32, 3),
    weights=None,
    name: str = "small_resnet",
    widths=(32, 64, 128, 256),
    blocks_per_stage: int = 2,
    drop_rate: float = 0.1,
) -> keras.Model:
    """A compact ResNet (basic blocks, squeeze-and-excitation, stochastic depth) for 32x32.

    Layers follow keras.applications' ResNet names (conv2_..conv5_, ``<block>_out``) so
    the same stage names and Grad-CAM lookup work. No ImageNet weights exist for it.
    """
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    total = len(widths) * blocks_per_stage
    index = 0
    for stage, width in enumerate(widths, start=2):
        for block in range(1, blocks_per_stage + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            # Linearly increasing drop rate with depth, as in the stochastic-depth paper.
            rate = drop_rate * index / max(total - 1, 1)
            x = basic_block(x, width, stride, rate, f"conv{stage}_block{block}")
            index += 1
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def basic_block(x, width: int, stride: int, drop_rate: float, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
    y = layers.Conv2D(
        width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv"
    )(x)
    y = layers.BatchNormalization(name=f"{name}_1_bn")(y)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
    y = squeeze_excite(y, name=f"{name}_se")
    y = StochasticDepth(drop_rate, name=f"{name}_drop")(y)
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(x)


def squeeze_excite(x, name: str, ratio: int = 4):
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(max(channels // ratio, 8), 1, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


# --- the backbone table --------------------------------------------------------------


@dataclass(frozen=True)
class Backbone:
    """What one architecture needs: constructor, preprocessing, stages, Grad-CAM layer."""

    # Called as constructor(include_top=False, weights=..., input_shape=..., name=...).
    constructor: Callable[..., keras.Model]
    preprocess: str
    # Stage name -> prefix of its first layer, shallow to deep. "conv5" is the stage at
    # output stride 32 in every table entry, "conv4" at 16, so unfreeze_from means the same.
    stages: dict[str, str]
    gradcam_layer: str
    min_size: int = 32
    has_imagenet: bool = True
    # Pretrained BatchNorm statistics are kept in inference mode; a from-scratch
    # backbone has none to protect, so its BatchNorm and stochastic depth follow training.
    inference_mode: bool = True
    weights_file: str = ""


RESNET_STAGES = {s: f"{s}_" for s in ("conv1", "conv2", "conv3", "conv4", "conv5")}


def _keras_app(name: str) -> Callable[..., keras.Model]:
    # Look the class up when called, so importing this module stays cheap.
    return lambda **kwargs: getattr(keras.applications, name)(**kwargs)


def _small_resnet(include_top=False, weights=None, input_shape=(32, 32, 3), name="backbone"):
    return small_resnet(input_shape=input_shape, weights=weights, name=name)


BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone(
        _keras_app("ResNet50"),
        "caffe",
        RESNET_STAGES,
        "conv5_block3_out",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101": Backbone(
        _keras_app("ResNet101"),
        "caffe",
        RESNET_STAGES,
        "conv5_block3_out",
        weights_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet152": Backbone(
        _keras_app("ResNet152"),
        "caffe",
        RESNET_STAGES,
        "conv5_block3_out",
        weights_file="resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet50v2": Backbone(
        _keras_app("ResNet50V2"),
        "tf",
        RESNET_STAGES,
        "post_relu",
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetb0": Backbone(
        _keras_app("EfficientNetB0"),
        "none",
        {
            "conv1": "stem_",
            "conv2": "block2a_",
            "conv3": "block3a_",
            "conv4": "block4a_",
            "conv5": "block6a_",
        },
        "top_activation",
        weights_file="efficientnetb0_notop.h5",
    ),
    "mobilenetv2": Backbone(
        _keras_app("MobileNetV2"),
        "tf",
        {
            "conv1": "Conv1",
            "conv2": "block_1_",
            "conv3": "block_3_",
            "conv4": "block_6_",
            "conv5": "block_13_",
        },
        "out_relu",
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "small_resnet": Backbone(
        _small_resnet,
        "none",
        RESNET_STAGES,
        "conv5_block2_out",
        min_size=16,
        has_imagenet=False,
        inference_mode=False,
    ),
}


def get_backbone(name: str) -> Backbone:
    """The table entry for ``name``; an unknown name is an error naming the nearest one."""
    if name in BACKBONES:
        return BACKBONES[name]
    hint = did_you_mean(name.lower(), BACKBONES, cutoff=0.4)
    raise ModelError(
        f"model.backbone={name!r} is not known{hint}; available: {', '.join(BACKBONES)}"
    )


def build_backbone(name: str, weights: str, image_size: int) -> keras.Model:
    """The backbone without its top, named "backbone", with the requested weights."""
    spec = get_backbone(name)
    if image_size < spec.min_size:
        raise ModelError(
            f"model.image_size={image_size} is below {name}'s minimum of {spec.min_size}"
        )
    kwargs = {"include_top": False, "input_shape": (image_size, image_size, 3), "name": "backbone"}
    if weights == "none":
        return spec.constructor(weights=None, **kwargs)
    if weights == "imagenet":
        if not spec.has_imagenet:
            raise ModelError(
                f"{name} has no ImageNet weights: set model.weights=none to train it from "
                "scratch, or model.weights=path/to/file.weights.h5"
            )
        try:
            return spec.constructor(weights="imagenet", **kwargs)
        except Exception as err:
            raise ModelError(
                f"could not get the ImageNet weights for {name} ({type(err).__name__}: {err}). "
                f"Without internet, download {spec.weights_file or 'the no-top weights file'} "
                "elsewhere and pass it as a local file: "
                "SET='model.weights=path/to/file.h5' (or a .weights.h5 file)"
            ) from None
    return load_backbone_weights(spec, name, Path(weights), kwargs)


def load_backbone_weights(spec: Backbone, name: str, path: Path, kwargs: dict) -> keras.Model:
    if not path.is_file():
        raise ModelError(
            f"model.weights={path}: no such file. Use 'imagenet', 'none' or a path to a "
            f"{name} no-top weights file (.h5 or .weights.h5)"
        )
    backbone = spec.constructor(weights=None, **kwargs)
    try:
        backbone.load_weights(str(path))
    except Exception as err:
        raise ModelError(
            f"model.weights={path} does not fit a {name} backbone without its top "
            f"({type(err).__name__}: {err}); use the matching '_notop' weights file"
        ) from None
    return backbone
