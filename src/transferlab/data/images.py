"""The one image reader: every stage that feeds a model or draws a figure reads pixels here.

Training, validation, evaluation, TTA, Grad-CAM, ``predict`` and the notebooks all
call ``read_image`` (files) or ``resize_pixels`` (arrays already in memory), so a
model sees the same uint8 pixels, bit for bit, whichever stage feeds it.

Decoding is Pillow's, for every mode a jpg/png/bmp can hold: grey, grey+alpha,
RGBA (alpha dropped, as Keras and torchvision do), palette (with or without
transparency), 1-bit, 16-bit grey (scaled, not clipped), CMYK JPEG. The EXIF
orientation of phone photos is applied, so pictures and pixel boxes stay upright.
Resizing is OpenCV's: bilinear, or pixel-area averaging when an image shrinks to half or
less (bilinear alone would alias there). JPEGs much larger than the target decode at a
reduced scale first.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.data.core import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# The EXIF tag that says how a photo must be turned to be seen upright (1: as stored).
ORIENTATION = 0x0112

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
    """uint8 RGB pixels resized to ``size`` x ``size``: the one resize every stage uses."""
    if pixels.shape[:2] == (size, size):
        return pixels
    shrink = min(pixels.shape[0], pixels.shape[1]) / size
    # Averaging pixel areas keeps a big shrink free of aliasing; bilinear is exact enough
    # (and ten times faster) for milder shrinks and for enlarging.
    method = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(pixels), (size, size), interpolation=method)


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
