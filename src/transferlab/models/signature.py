"""What a saved model takes: its named inputs, its image size, and how to feed it."""

from __future__ import annotations

import numpy as np

SIDE_ORDER = ("metadata", "boxes", "box_mask")


def side_names_of(model) -> list[str]:
    """The inputs a model takes besides "image": metadata, boxes, box_mask (those present)."""
    names = {t.name for t in model.inputs}
    return [n for n in SIDE_ORDER if n in names]


def image_shape_of(model) -> tuple:
    """Shape of the model's "image" input (its only input for image-only models)."""
    for tensor in model.inputs:
        if tensor.name == "image":
            return tuple(tensor.shape)
    return tuple(model.inputs[0].shape)


def fixed_input_size(model) -> int | None:
    """Side of the square images the model's input is built for; None if it takes any."""
    height = image_shape_of(model)[1]
    return int(height) if height else None


def input_size_of(model) -> int | None:
    """Side to feed new images at: the model's input size, else its resize layer's."""
    if fixed_input_size(model):
        return fixed_input_size(model)
    try:
        return int(model.get_layer("resize").height)
    except ValueError:
        return None


def assemble_inputs(model, images: np.ndarray, side: dict | None = None):
    """What ``model.predict`` takes: the images, or a dict of every named input it needs.

    A missing input is an error naming what the model takes (metadata columns included);
    ``box_mask`` may be left out when every given box is real (non-zero).
    """
    names = side_names_of(model)
    if not names:
        return images
    side = dict(side or {})
    if "boxes" in side and "box_mask" not in side:
        side["box_mask"] = (np.abs(np.asarray(side["boxes"])).sum(axis=-1) > 0).astype(np.float32)
    missing = [n for n in names if n not in side]
    if missing:
        takes = ", ".join(describe_input(model, n) for n in names if n != "box_mask")
        raise ValueError(
            f"this model takes the inputs image, {takes}; missing: {', '.join(missing)}. "
            "Pass them as side_inputs={name: array}"
        )
    count = len(images)
    arrays = {n: np.asarray(side[n], dtype=np.float32) for n in names}
    wrong = [f"{n} has {len(a)} rows" for n, a in arrays.items() if len(a) != count]
    if wrong:
        raise ValueError(f"{count} images but {', '.join(wrong)}; give one row per image")
    return {"image": images, **arrays}


def describe_input(model, name: str) -> str:
    shape = next(tuple(t.shape[1:]) for t in model.inputs if t.name == name)
    if name == "metadata":
        columns = model.get_layer("meta_norm").columns
        return f"metadata (columns {', '.join(columns)})"
    if name == "boxes":
        return f"boxes ({shape[0]} relative x, y, w, h boxes per image)"
    return f"{name} {shape}"
