"""The one image reader: every stage that feeds a model or draws a figure reads pixels here.

Training, validation, evaluation, TTA, Grad-CAM, ``predict`` and the notebooks all
call ``read_image`` (files) or ``resize_pixels`` (arrays already in memory), so a
model sees the same uint8 pixels, bit for bit, whichever stage feeds it.

Decoding is Pillow's, for every mode a jpg/png/bmp can hold: grey, grey+alpha,
RGBA (alpha dropped, as Keras and torchvision do), palette (with or without
transparency), 1-bit, 16-bit grey (scaled, not clipped), CMYK JPEG. The EXIF
orientation of phone photos is applied, so pictures and pixel boxes stay upright.
Resizing is OpenCV's, one axis at a time: each axis that shrinks to half or less is
averaged over pixel areas (bilinear alone would alias there), the other bilinear, so a
16:9 photo's long side is not aliased because its short side shrinks mildly. JPEGs much
larger than the target decode at a reduced scale first (libjpeg's scaled DCT, Pillow's
``draft``). The exported SavedModel decodes and resizes the same way in TensorFlow ops
(``evaluation.export``), to within one grey level.

``decode_count()`` counts the files decoded in this process, so tests and benchmarks can
show that a cached pass decodes nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.data.core import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# The EXIF tag that says how a photo must be turned to be seen upright (1: as stored).
ORIENTATION = 0x0112

# tf.data runs many readers at once; OpenCV's own thread pool on top of them would
# compete for the same cores (and a resize to 224 px gains nothing from it).
cv2.setNumThreads(1)

# Files decoded in this process (tf.data's readers run in many threads at once).
DECODES = {"count": 0}
DECODES_LOCK = threading.Lock()

# Pillow raises these for files it cannot decode (truncated, corrupt, not an image).
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """RGB uint8 pixels (H, W, 3) of an image file, resized to ``size`` x ``size`` if given.

    Raises ``DataError`` naming the file when it is missing or cannot be decoded.
    """
    with DECODES_LOCK:
        DECODES["count"] += 1
    try:
        with Image.open(path) as image:
            if size:
                # JPEGs decode straight at 1/2, 1/4 or 1/8 scale when that still covers
                # ``size``: a 12-megapixel photo read for 224 px costs a fraction.
                image.draft("RGB", (size, size))
            if image.getexif().get(ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)  # a copy: only when needed
            pixels = to_rgb_uint8(image)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except DECODE_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return resize_pixels(pixels, size) if size else pixels


def decode_count() -> int:
    """How many image files ``read_image`` has been asked to decode in this process."""
    return DECODES["count"]


def draft_scale(width: int, height: int, size: int) -> int:
    """The JPEG scale (1, 2, 4 or 8) Pillow's ``draft`` decodes at for a ``size`` target.

    The largest reduction that keeps both sides at least ``size``, as
    ``PIL.JpegImagePlugin.draft`` picks it; the export decodes at the same scale.
    """
    fits = min(width // size, height // size)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale)


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as RGB uint8 (H, W, 3)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or 32-bit) grey: scale to 0..255 rather than clip.
        pixels = np.asarray(image, dtype=np.float64)
        maximum = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        grey = np.clip(pixels / maximum * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        # Palette transparency is only read correctly through RGBA.
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB pixels resized to ``size`` x ``size``: the one resize every stage uses.

    Width first, then height, each with the filter its own scale factor calls for
    (``axis_filters``); the pass between them stays float32, so two passes round once.
    """
    if pixels.shape[:2] == (size, size):
        return pixels
    height, width = pixels.shape[:2]
    across, down = (OPENCV_FILTERS[f] for f in axis_filters(height, width, size))
    image = np.ascontiguousarray(pixels, dtype=np.float32)
    if width != size:
        image = cv2.resize(image, (size, height), interpolation=across)
    if height != size:
        image = cv2.resize(image, (size, size), interpolation=down)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


OPENCV_FILTERS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


def axis_filters(height: int, width: int, size: int) -> tuple[str, str]:
    """("area" or "bilinear") for the width, then the height, of a resize to ``size``.

    Averaging pixel areas keeps a shrink to half or less free of aliasing; bilinear is
    exact enough for milder shrinks and for enlarging.
    """
    return tuple("area" if side / size >= 2 else "bilinear" for side in (width, height))


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or None when the reader can use it."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'}; use jpg, jpeg, png or bmp)"
    try:
        # A small draft decodes the whole file fast, so truncated files are still caught.
        read_image(path, size=64)
    except DataError as err:
        return f"not a readable image ({str(err).split(': ', 1)[-1]})"
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as the reader shows it (EXIF orientation applied)."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(ORIENTATION, 1)
    # Orientations 5-8 turn the picture by 90 degrees: width and height swap.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
