"""The model: raw pixels → augmentation → resize → backbone preprocessing → backbone → head.

One table (``BACKBONES``) holds what differs between architectures: how to build
the backbone, how it scales its inputs, where its stages start (for unfreezing)
and which layer Grad-CAM reads. Everything here uses Keras 3 APIs only (no
TensorFlow import), so the same model builds under the JAX backend.

Layer names are an interface: Grad-CAM and evaluation look up "backbone",
"head_pool", ..., "logits" and "predictions".

Importing this package registers every object a saved model can name (custom layers,
side layers, the OneCycle schedule), so ``keras.models.load_model`` reads the project's
``.keras`` files; ``import transferlab`` arranges that import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

from transferlab.config import Config
from transferlab.config.schema import IMAGE_AUGMENTATIONS, did_you_mean
from transferlab.data.side import side_input_names
from transferlab.models.backbones import (
    BACKBONES,
    Backbone,
    ModelError,
    build_backbone,
    get_backbone,
    small_resnet,
)
from transferlab.models.custom_layers import Preprocess, StochasticDepth
from transferlab.models.dtypes import compute_dtypes, load_with_policy
from transferlab.models.schedules import OneCycle
from transferlab.models.side_layers import CropToBox, MaskOutsideBoxes, NormalizeMetadata

__all__ = [
    "BACKBONES",
    "HEAD_LAYERS",
    "SIDE_LAYERS",
    "Backbone",
    "CropToBox",
    "MaskOutsideBoxes",
    "ModelError",
    "NormalizeMetadata",
    "OneCycle",
    "Preprocess",
    "StochasticDepth",
    "build_backbone",
    "build_head_model",
    "build_model",
    "compute_dtypes",
    "copy_head_weights",
    "freeze_backbone",
    "get_backbone",
    "load_model",
    "side_input_names",
    "small_resnet",
    "unfreeze_from",
]

# Layers after the backbone, in order; the feature-cached phase 1 trains these alone.
HEAD_LAYERS = (
    "head_pool",
    "head_dropout",
    "head_dense",
    "head_bn",
    "head_relu",
    "logits",
    "predictions",
)
# Fusion models' layers that encode metadata and boxes; trained with the head.
SIDE_LAYERS = ("meta_norm", "side_dense")


# --- building ---------------------------------------------------------------------------

# How each of config's IMAGE_AUGMENTATIONS is built (a test checks the names agree).
AUGMENTATION_LAYERS: dict[str, Callable[..., layers.Layer]] = {
    "flip": lambda **kw: layers.RandomFlip("horizontal", **kw),
    "rotation": lambda **kw: layers.RandomRotation(0.1, **kw),
    "zoom": lambda **kw: layers.RandomZoom(0.1, **kw),
    "translation": lambda **kw: layers.RandomTranslation(0.1, 0.1, **kw),
    "contrast": lambda **kw: layers.RandomContrast(0.2, value_range=(0, 255), **kw),
    "brightness": lambda **kw: layers.RandomBrightness(0.2, value_range=(0, 255), **kw),
    "randaugment": lambda **kw: layers.RandAugment(value_range=(0, 255), **kw),
}


def image_augmentations(names: list[str]) -> list[str]:
    """The per-image augmentations among ``names`` (the ones that live in the model)."""
    return [n for n in names if n in IMAGE_AUGMENTATIONS]


def build_augmentation(names: list[str]) -> keras.Sequential | None:
    """A Sequential of Keras preprocessing layers; active only when training."""
    chosen = image_augmentations(names)
    if not chosen:
        return None
    # float32 even under mixed precision: the image ops expect it and cost little.
    return keras.Sequential(
        [AUGMENTATION_LAYERS[n](dtype="float32") for n in chosen], name="augmentation"
    )


def side_inputs(cfg: Config) -> dict[str, keras.KerasTensor]:
    shapes = {
        "metadata": (len(cfg.data.metadata_columns),),
        "boxes": (cfg.data.max_boxes, 4),
        "box_mask": (cfg.data.max_boxes,),
    }
    return {name: keras.Input(shapes[name], name=name) for name in side_input_names(cfg)}


def roi_layer(cfg: Config) -> layers.Layer:
    """The layer that narrows the image to its boxes (model.roi), before the resize layer."""
    # float32 even under mixed precision, like the augmentation layers.
    if cfg.model.roi == "mask":
        return MaskOutsideBoxes(cfg.model.roi_margin, name="roi_mask", dtype="float32")
    select = "largest" if cfg.model.roi == "largest" else "index"
    return CropToBox(
        select, cfg.model.roi_index, cfg.model.roi_margin, name="roi_crop", dtype="float32"
    )


def encode_side(cfg: Config, inputs: dict, metadata_stats: dict | None):
    """Metadata (normalized) and boxes with their mask → one Dense-encoded vector."""
    parts = []
    if "metadata" in inputs:
        if metadata_stats is None:
            raise ModelError(
                "a fusion model with metadata needs the training split's statistics "
                "(metadata_stats={'mean': [...], 'variance': [...]})"
            )
        normalize = NormalizeMetadata(
            metadata_stats["mean"],
            metadata_stats["variance"],
            cfg.data.metadata_columns,
            name="meta_norm",
        )
        parts.append(normalize(inputs["metadata"]))
    if "boxes" in inputs:
        parts += [layers.Flatten(name="boxes_flat")(inputs["boxes"]), inputs["box_mask"]]
    x = parts[0] if len(parts) == 1 else layers.Concatenate(name="side_concat")(parts)
    return layers.Dense(cfg.model.side_units, activation="relu", name="side_dense")(x)


def build_model(
    cfg: Config, num_classes: int, input_size: int, metadata_stats: dict | None = None
) -> keras.Model:
    """Build the full classifier for raw 0..255 images of side ``input_size``.

    Image → ["roi_crop" | "roi_mask"] → "augmentation" (if any) → "resize" →
    "preprocess" → "backbone" → head ("head_pool", ["fusion_concat"], "head_dropout",
    ["head_dense", "head_bn", "head_relu"], "logits", "predictions" in float32). The
    backbone is frozen; phase 2 unfreezes part of it. With ``model.inputs`` fusion or
    roi the model takes a dict of named inputs ("image", "metadata", "boxes",
    "box_mask"); ``metadata_stats`` (mean and variance per metadata column, from the
    training split) are stored in the model.
    """
    spec = get_backbone(cfg.model.backbone)
    image_size = cfg.model.image_size
    inputs = keras.Input((input_size, input_size, 3), name="image")
    side = side_inputs(cfg)
    x = inputs
    if cfg.model.inputs == "roi":
        # Before augmentation, so flips and shifts cannot move the image off its boxes.
        x = roi_layer(cfg)([x, side["boxes"], side["box_mask"]])
    augmentation = build_augmentation(cfg.model.augmentation)
    if augmentation is not None:
        x = augmentation(x)
    x = layers.Resizing(image_size, image_size, name="resize")(x)
    x = Preprocess(spec.preprocess, name="preprocess")(x)
    backbone = build_backbone(cfg.model.backbone, cfg.model.weights, image_size)
    backbone.trainable = False
    # training=False keeps pretrained BatchNorm in inference mode even when unfrozen.
    x = backbone(x, training=False) if spec.inference_mode else backbone(x)
    pool = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
    x = pool[cfg.model.pooling](name="head_pool")(x)
    if side and cfg.model.inputs == "fusion":
        x = layers.Concatenate(name="fusion_concat")([x, encode_side(cfg, side, metadata_stats)])
    for layer in head_layers(cfg, num_classes):
        x = layer(x)
    model_inputs = {"image": inputs, **side} if side else inputs
    return keras.Model(model_inputs, x, name=f"{cfg.model.backbone}_classifier")


def head_layers(cfg: Config, num_classes: int) -> list[layers.Layer]:
    """The head's layers after pooling, named as in ``HEAD_LAYERS``."""
    head = [layers.Dropout(cfg.model.dropout, name="head_dropout")]
    if cfg.model.dense_units:
        head += [
            layers.Dense(cfg.model.dense_units, use_bias=False, name="head_dense"),
            layers.BatchNormalization(name="head_bn"),
            layers.ReLU(name="head_relu"),
        ]
    # Softmax in float32: float16 probabilities underflow under mixed precision.
    return head + [
        layers.Dense(num_classes, name="logits"),
        layers.Activation("softmax", dtype="float32", name="predictions"),
    ]


def build_head_model(
    cfg: Config, num_classes: int, feature_dim: int, metadata_stats: dict | None = None
) -> keras.Model:
    """The head alone, on pooled backbone features: what feature-cached phase 1 trains.

    A fusion head also takes the metadata and box inputs, encoded as in the full model.
    """
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    side = side_inputs(cfg) if cfg.model.inputs == "fusion" else {}
    if side:
        x = layers.Concatenate(name="fusion_concat")([x, encode_side(cfg, side, metadata_stats)])
    for layer in head_layers(cfg, num_classes):
        x = layer(x)
    if side:
        return keras.Model({"features": inputs, **side}, x, name="head")
    return keras.Model(inputs, x, name="head")


def copy_head_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every head (and side-encoder) layer's weights from ``source`` to ``target``."""
    names = {layer.name for layer in source.layers} & {layer.name for layer in target.layers}
    for name in HEAD_LAYERS + SIDE_LAYERS:
        if name in names:
            target.get_layer(name).set_weights(source.get_layer(name).get_weights())


# --- freezing ------------------------------------------------------------------------------


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer("backbone")


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Freeze the whole backbone; the head stays trainable. Recompile afterwards."""
    backbone_of(model).trainable = False
    return model


def unfreeze_from(model: keras.Model, stage: str, backbone_name: str | None = None) -> keras.Model:
    """Train the backbone from ``stage`` ("conv5", "conv4", ..., "all") to its end.

    BatchNormalization layers of a pretrained backbone stay frozen (their statistics
    come from ImageNet and small batches would wreck them). ``backbone_name`` defaults
    to the one ``build_model`` wrote into the model's name. Recompile afterwards.
    """
    backbone_name = backbone_name or model.name.removesuffix("_classifier")
    spec = get_backbone(backbone_name)
    backbone = backbone_of(model)
    start = stage_start(backbone, spec, stage, backbone_name)
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= start and not (is_bn and spec.inference_mode)
    return model


def stage_start(backbone: keras.Model, spec: Backbone, stage: str, backbone_name: str) -> int:
    """Index of the first backbone layer of ``stage``."""
    if stage == "all":
        return 0
    if stage not in spec.stages:
        hint = did_you_mean(stage, [*spec.stages, "all"], cutoff=0.6)
        raise ModelError(
            f"unfreeze_from={stage!r} is not a stage of {backbone_name}{hint}; "
            f"use one of: {', '.join([*spec.stages, 'all'])}"
        )
    prefix = spec.stages[stage]
    for index, layer in enumerate(backbone.layers):
        if layer.name.startswith(prefix):
            return index
    raise ModelError(f"{backbone_name} has no layer starting with {prefix!r} (stage {stage})")


def load_model(path: str | Path, policy: str = "float32") -> keras.Model:
    """Load a saved transferlab model in safe mode (compile=False), computing in ``policy``.

    float32 by default, wherever the model trained: evaluation, Grad-CAM, prediction and
    export of a model trained under mixed precision run (and take gradients) in float32.
    Training passes its own policy (``keras.config.dtype_policy().name``).
    """
    path = Path(path)
    if not path.is_file():
        nearby = sorted(p.name for p in path.parent.glob("*.keras")) if path.parent.is_dir() else []
        hint = f"; models there: {', '.join(nearby)}" if nearby else "; train a model first"
        raise FileNotFoundError(f"model file {path} does not exist{hint}")
    # No optimizer: callers that train recompile; evaluation needs none.
    return load_with_policy(path, policy)
