"""``make export``: the experiment's best model as a TensorFlow SavedModel, for serving.

The SavedModel needs neither transferlab nor Keras code to load
(``tf.saved_model.load``; TensorFlow Serving reads it as it is). Its serving signature
takes uint8 RGB images of any size, one size per batch, and resizes them inside to the
size the model was trained on as the project's reader resizes; the ``serve_encoded``
signature takes the files' bytes instead (JPEG, PNG, BMP, GIF; any mix of sizes) and
decodes them as the reader does, JPEG draft scale included. Either way the model sees
training's pixels to within one grey level (see docs/export.md for exactly what holds).
Fusion and ROI models take their named inputs (metadata, boxes, box_mask) too.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import Config
from transferlab.evaluation.calibration import load_temperature
from transferlab.evaluation.inference import class_names_for, default_model_path
from transferlab.models import load_model
from transferlab.models.signature import input_size_of, side_names_of
from transferlab.runs import new_run_dir, write_json

SIGNATURE = "serving_default"
ORIENTATION_TAG = 0x0112  # EXIF: how a photo must be turned to be seen upright
# Encoded files (JPEG, PNG, BMP, GIF bytes), decoded inside as the reader decodes them.
ENCODED_SIGNATURE = "serve_encoded"


class ExportError(ValueError):
    """A model that cannot be exported as it is; the message says what to do."""


@dataclass
class ExportResult:
    path: Path  # the SavedModel folder
    source: Path  # the .keras model it was made from
    run_dir: Path  # outputs/runs/<ts>_<experiment>_export/ with export.json
    inputs: dict  # signature input name -> {"shape": [...], "dtype": "..."}
    class_names: list
    temperature: float | None = None  # the calibration built into its probabilities

    def __str__(self) -> str:
        calibrated = (
            f", calibrated with temperature {self.temperature:.3f}"
            if self.temperature is not None
            else ""
        )
        return (
            f"SavedModel {self.path} (from {self.source.name}{calibrated}), "
            f"record in {self.run_dir}"
        )


def export_path(cfg: Config) -> Path:
    """``models/<experiment>_savedmodel/`` (fusion and ROI models add their mode)."""
    return Path(cfg.models_dir) / f"{cfg.model_name}_savedmodel"


def export_model(cfg: Config, model_path: str | Path | None = None) -> ExportResult:
    """Write ``model_path`` (default: the experiment's best model) as a SavedModel.

    The signature ``serving_default`` (also callable as ``loaded.serve``) takes "image"
    (uint8, batch x height x width x 3) and, for fusion and ROI models, "metadata",
    "boxes" and "box_mask" as float32; it returns "probabilities" (batch x classes),
    "class_index" (int64) and "class_name" (string). A temperature that make evaluate
    fitted to this model file (``eval.calibrate=true``) is built into the probabilities.
    ``serve_encoded`` takes "image_bytes" (string, batch) in place of "image".
    """
    source = Path(model_path) if model_path else default_model_path(cfg)
    model = load_model(source)
    size = input_size_of(model)
    if size is None:
        raise ExportError(
            f"{source} takes images of any size and has no resize layer, so the export "
            "cannot tell which size to resize to; rebuild it with transferlab.models.build_model"
        )
    num_classes = int(model.outputs[0].shape[-1])
    class_names = class_names_for(source, cfg.output_dir, num_classes)
    specs = input_specs(model)
    path = export_path(cfg)
    temperature = load_temperature(source)
    write_saved_model(model, size, class_names, specs, path, temperature)

    inputs = {
        name: {"shape": spec.shape.as_list(), "dtype": spec.dtype.name}
        for name, spec in specs.items()
    }
    run_dir = new_run_dir(cfg.output_dir, cfg.experiment, "export")
    cfg.save(run_dir / "config.json")
    write_json(
        run_dir / "export.json",
        {
            "saved_model": str(path),
            "source_model": str(source),
            "signature": SIGNATURE,
            "encoded_signature": ENCODED_SIGNATURE,
            "inputs": inputs,
            "outputs": ["probabilities", "class_index", "class_name"],
            "resized_to": size,
            "class_names": class_names,
            "temperature": temperature,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    )
    return ExportResult(path, source, run_dir, inputs, class_names, temperature)


def input_specs(model: keras.Model) -> dict[str, tf.TensorSpec]:
    """The signature's inputs: uint8 images of any size, side inputs as the model has them."""
    specs = {"image": tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")}
    for tensor in model.inputs:
        if tensor.name in side_names_of(model):
            shape = [None, *tensor.shape[1:]]
            specs[tensor.name] = tf.TensorSpec(shape, tf.float32, name=tensor.name)
    return specs


def resize_images(images: tf.Tensor, size: int) -> tf.Tensor:
    """A uint8 batch resized to ``size`` x ``size`` as the project's reader resizes.

    ``data.images.resize_pixels`` resizes the width, then the height, each with pixel-area
    averaging when that axis shrinks to half or less and bilinear otherwise; TensorFlow's
    "area" and "bilinear" resizes compute the same weights. Rounded to whole values, as the
    reader's uint8 output is. Returns float32.
    """
    pixels = tf.cast(images, tf.float32)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    pixels = resize_axis(pixels, width, size, lambda: (height, size))
    pixels = resize_axis(pixels, height, size, lambda: (size, size))
    return tf.clip_by_value(tf.round(pixels), 0.0, 255.0)


def resize_axis(pixels: tf.Tensor, side: tf.Tensor, size: int, target) -> tf.Tensor:
    """One axis of ``resize_images``: ``side`` pixels to ``size``, the other axis kept."""
    shrink = tf.cast(side, tf.float32) / size
    return tf.cond(
        tf.equal(side, size),
        lambda: pixels,
        lambda: tf.cond(
            shrink >= 2.0,
            lambda: tf.image.resize(pixels, target(), method="area"),
            lambda: tf.image.resize(pixels, target(), method="bilinear"),
        ),
    )


def decode_encoded(contents: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded JPEG, PNG, BMP or GIF (a string scalar) as ``read_image(file, size)`` reads it.

    A JPEG decodes at the scale Pillow's ``draft`` picks (``data.images.draft_scale``),
    with libjpeg's accurate integer DCT as Pillow uses it (the same pixels), and is turned
    upright by its EXIF orientation as the reader turns it. Returns uint8 (size, size, 3).
    """
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 2), b"\xff\xd8")
    pixels = tf.cond(
        is_jpeg,
        lambda: turn_upright(decode_jpeg_draft(contents, size), exif_orientation(contents)),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    resized = resize_images(pixels[None], size)[0]
    return tf.cast(resized, tf.uint8)


def decode_jpeg_draft(contents: tf.Tensor, size: int) -> tf.Tensor:
    """A JPEG decoded at 1/8, 1/4, 1/2 or full scale, as ``data.images.draft_scale`` picks."""
    shape = tf.io.extract_jpeg_shape(contents)
    fits = tf.minimum(shape[1] // size, shape[0] // size)
    # Branch index: 0 for scale 1, 1 for 2, 2 for 4, 3 for 8 (ratio is a static attribute).
    branch = tf.reduce_sum(tf.cast(fits >= tf.constant([2, 4, 8]), tf.int32))

    def at(ratio: int):
        return lambda: tf.io.decode_jpeg(
            contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    return tf.switch_case(branch, [at(1), at(2), at(4), at(8)])


# Where the reader's ImageOps.exif_transpose sends each EXIF orientation (2-8), in ops.
ORIENTATIONS = [
    lambda image: image,  # 1 (and anything unreadable): as stored
    lambda image: image[:, ::-1],  # 2: mirrored
    lambda image: image[::-1, ::-1],  # 3: turned 180 degrees
    lambda image: image[::-1],  # 4: flipped upside down
    lambda image: tf.transpose(image, [1, 0, 2]),  # 5: transposed
    lambda image: tf.image.rot90(image, 3),  # 6: turned 90 degrees clockwise
    lambda image: tf.transpose(image[::-1, ::-1], [1, 0, 2]),  # 7: transversed
    lambda image: tf.image.rot90(image, 1),  # 8: turned 90 degrees anticlockwise
]


def turn_upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """``image`` turned as its EXIF ``orientation`` (1-8) says, as the reader does."""
    return tf.switch_case(orientation - 1, [lambda f=f: f(image) for f in ORIENTATIONS])


def exif_orientation(contents: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (int32, 1-8) of a JPEG's bytes; 1 when it has none.

    Reads the first IFD of the APP1 "Exif" block (in the file's first 64 KiB, where
    cameras write it): tag 0x0112, a 16-bit value, in the block's own byte order.
    """
    data = tf.io.decode_raw(tf.strings.substr(contents, 0, 65536), tf.uint8)
    data = tf.cast(tf.concat([data, tf.zeros([16], tf.uint8)], 0), tf.int32)
    length = tf.shape(data)[0] - 16
    # Where "Exif\0\0" starts: every window of six bytes compared at once.
    marker = [ord(c) for c in "Exif"] + [0, 0]
    found = tf.reduce_all(
        tf.stack([data[k : length + k] == byte for k, byte in enumerate(marker)]), axis=0
    )
    tiff = tf.cast(tf.argmax(tf.cast(found, tf.int32)), tf.int32) + 6
    little = tf.equal(data[tf.minimum(tiff, length)], ord("I"))

    def number(offset, width):
        # The unsigned integer of ``width`` bytes at ``offset`` (a scalar or a vector).
        at = tf.clip_by_value(offset[..., None] + tf.range(width), 0, length + 15)
        values = tf.gather(data, at)
        weights = 256 ** tf.range(width)
        return tf.reduce_sum(values * tf.where(little, weights, weights[::-1]), axis=-1)

    ifd = tiff + number(tiff + 4, 4)
    count = tf.clip_by_value(number(ifd, 2), 0, 64)
    entries = ifd + 2 + 12 * tf.range(count)
    tags, values = number(entries, 2), number(entries + 8, 2)
    matches = tf.boolean_mask(values, tf.equal(tags, ORIENTATION_TAG))
    orientation = tf.cond(tf.size(matches) > 0, lambda: matches[0], lambda: tf.constant(1))
    valid = tf.reduce_any(found) & (orientation >= 1) & (orientation <= 8)
    return tf.where(valid, orientation, 1)


def write_saved_model(
    model: keras.Model,
    size: int,
    class_names: list[str],
    specs: dict,
    path: Path,
    temperature: float | None = None,
) -> None:
    """Trace the serving function and write it; an existing export is replaced whole.

    ``temperature``: probabilities become softmax(log p / T), as
    ``experiments.stats.apply_temperature`` computes them.
    """
    names = tf.constant(class_names)

    def serve(inputs: dict) -> dict:
        return predict_pixels(resize_images(inputs["image"], size), inputs)

    def serve_encoded(inputs: dict) -> dict:
        pixels = tf.map_fn(
            lambda contents: decode_encoded(contents, size),
            inputs["image_bytes"],
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
        )
        return predict_pixels(tf.cast(pixels, tf.float32), inputs)

    def predict_pixels(pixels: tf.Tensor, inputs: dict) -> dict:
        side = {k: v for k, v in inputs.items() if k not in ("image", "image_bytes")}
        probabilities = model({"image": pixels, **side} if side else pixels, training=False)
        probabilities = tf.cast(probabilities, tf.float32)
        if temperature is not None:
            tiny = float(np.finfo(np.float32).tiny)  # as apply_temperature: 0 stays finite
            logits = tf.math.log(tf.maximum(probabilities, tiny))
            probabilities = tf.nn.softmax(logits / temperature, axis=-1)
        index = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_index": index,
            "class_name": tf.gather(names, index),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also the SavedModel's serving_default signature.
    archive.add_endpoint("serve", serve, input_signature=[specs])
    encoded = {**specs, "image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")}
    del encoded["image"]
    archive.add_endpoint(ENCODED_SIGNATURE, serve_encoded, input_signature=[encoded])
    # Written beside the target, then swapped in: a failed export leaves the old one.
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(str(partial), verbose=False)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    partial.rename(path)
    shutil.rmtree(old, ignore_errors=True)
