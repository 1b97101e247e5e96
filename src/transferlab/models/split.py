"""Where a model splits for freeze-once training: a frozen prefix and a trainable suffix.

Everything on the image's path before the first trainable layer is a fixed function of
the image (BatchNorm frozen, no augmentation): it can run once per image and the
trainable suffix can train on its cached output. Phase 1 cuts after "head_pool" (the
whole backbone is frozen); phase 2 from conv5 cuts at conv4's last output.

The prefix and suffix share their layers (and so their weights) with the full model:
training the suffix trains the full model's layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

HEAD_CUT = "head_pool"  # the cut when the whole backbone is frozen: pooled features


@dataclass
class Cut:
    """Where to split (the layer whose output is cached), or why the model cannot split."""

    layer: str | None
    reason: str = ""


def find_cut(model: keras.Model) -> Cut:
    """The last frozen layer on the image's path before the first trainable one.

    Only backbone layers can train before the head. A layer is a valid cut when every
    later backbone layer depends on the image through it alone (true between ResNet
    blocks, not inside one).
    """
    backbone = model.get_layer("backbone")
    layers = backbone.layers
    first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
    if first is None:
        return Cut(HEAD_CUT)
    frozen = [layer for layer in layers[:first] if layer.weights]
    if not frozen:
        return Cut(None, f"every backbone layer from {layers[first].name} on trains")
    cut = layers[first - 1].name
    try:
        tail = backbone_tail(backbone, cut)
    except ValueError as err:
        return Cut(None, f"the backbone does not split at {cut} ({err})")
    # The tail reaches every later layer only if nothing skips over the cut.
    if len(tail.layers) - 1 != len(layers) - first:
        return Cut(None, f"layers before {cut} feed layers after it directly")
    return Cut(cut)


def backbone_tail(backbone: keras.Model, cut: str) -> keras.Model:
    """The backbone from ``cut``'s output to its end, sharing its layers."""
    return keras.Model(backbone.get_layer(cut).output, backbone.output, name="backbone_tail")


def prefix_model(model: keras.Model, cut: str) -> keras.Model:
    """The full model's inputs to ``cut``'s output: what runs once per image."""
    if cut == HEAD_CUT:
        return keras.Model(model.input, model.get_layer(HEAD_CUT).output, name="prefix")
    backbone = model.get_layer("backbone")
    head_of_backbone = keras.Model(backbone.input, backbone.get_layer(cut).output)
    # "preprocess" is the layer whose output the backbone takes.
    features = head_of_backbone(model.get_layer("preprocess").output, training=False)
    return keras.Model(model.input, features, name="prefix")


def suffix_model(
    model: keras.Model, cut: str, side_names: list[str], inference_mode: bool = True
) -> keras.Model:
    """``cut``'s output (as input "features", plus ``side_names``) to the predictions.

    ``side_names`` are the side inputs the head takes (fusion's metadata and boxes);
    ``inference_mode`` calls the backbone's tail with ``training=False``, as
    ``build_model`` calls a pretrained backbone.
    """
    side = {name: model.input[name] for name in side_names}
    after = model.get_layer(HEAD_CUT)
    start = after.output if cut == HEAD_CUT else after.input
    head = keras.Model({"features": start, **side} if side else start, model.output)
    if cut == HEAD_CUT:
        head.name = "suffix"
        return head
    tail = backbone_tail(model.get_layer("backbone"), cut)
    features = keras.Input(tail.input.shape[1:], name="features")
    new_side = {name: keras.Input(t.shape[1:], name=name) for name, t in side.items()}
    x = tail(features, training=False) if inference_mode else tail(features)
    outputs = head({"features": x, **new_side} if side else x)
    inputs = {"features": features, **new_side} if side else features
    return keras.Model(inputs, outputs, name="suffix")


def leaf_layers(model: keras.Model):
    """Every layer of ``model`` with nested models opened up."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy each weighted layer of ``source`` onto the layer of the same name in ``target``.

    How a suffix checkpoint goes back onto the full model. Every weighted layer of
    ``source`` must exist in ``target``: a silent partial copy would publish a model
    that never trained.
    """
    by_name = {layer.name: layer for layer in leaf_layers(target)}
    for layer in leaf_layers(source):
        if not layer.weights:
            continue
        if layer.name not in by_name:
            raise ValueError(f"layer {layer.name!r} of {source.name} is not in {target.name}")
        by_name[layer.name].set_weights(layer.get_weights())
