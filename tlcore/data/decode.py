"""Safe decoding of untrusted image bytes into fixed-size RGB uint8 arrays.

Pillow reads the header first, so format, pixel count and aspect ratio are checked before any
pixel is decoded (a decompression bomb costs nothing). JPEGs are then decoded straight at a
reduced scale with ``Image.draft`` — libjpeg's DCT scaling, 2–8× faster than decoding full size
and resizing, which torchvision.io.decode_jpeg cannot do on the CPU. Every mode becomes RGB.
"""

from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlcore.settings import Limits

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class BadImage(Exception):
    """This file is not a usable image; ``str(err)`` is the reason shown to the user."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # size×size×3 uint8
    width: int  # original size, before any crop or resize
    height: int
    mode: str  # original Pillow mode, e.g. "RGB", "L", "P", "I;16"
    format: str


def _open(data: bytes, limits: Limits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise BadImage(f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("decompression bomb: the header claims too many pixels") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise BadImage(f"unreadable image header ({err})") from None
    w, h = image.size
    if w < 1 or h < 1:
        raise BadImage(f"empty image ({w}×{h})")
    if w * h > limits.max_pixels:
        raise BadImage(f"too many pixels: {w}×{h} is over the {limits.max_pixels / 1e6:.0f} MP limit "
                       "(possible decompression bomb)")
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise BadImage(f"extreme aspect ratio {w}×{h} (limit {limits.max_aspect:.0f}:1)")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB.

    16/32-bit and float images are min–max stretched per image (a 12-bit X-ray in a 16-bit file
    would otherwise be nearly black); transparency is composited on white.
    """
    if image.mode in _HIGH_BIT_MODES:
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8))  # 2-D uint8 → mode L
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre square crop, then resize to size×size (cropping first bounds memory)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)


def decode_bytes(data: bytes, size: int, limits: Limits) -> Decoded:
    """Decode one untrusted file to size×size RGB, or raise BadImage with the reason."""
    image = _open(data, limits)
    width, height, mode, fmt = image.width, image.height, image.mode, image.format or "?"
    try:
        if fmt == "JPEG":
            # Ask libjpeg for the smallest scale that still covers `size` on the short side.
            scale = min(width, height) / size
            image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        image.load()
        image = ImageOps.exif_transpose(image)
        pixels = np.array(square(to_rgb(image), size))  # a writable copy (torch refuses read-only views)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImage(f"corrupt or truncated image ({err})") from None
    return Decoded(pixels, width, height, mode, fmt)


def decode_all(blobs: list[bytes], size: int, limits: Limits, workers: int | None = None
               ) -> list[Decoded | BadImage]:
    """Decode many files in parallel threads (Pillow releases the GIL while decoding)."""

    def one(data: bytes) -> Decoded | BadImage:
        try:
            return decode_bytes(data, size, limits)
        except BadImage as err:
            return err

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, blobs))
