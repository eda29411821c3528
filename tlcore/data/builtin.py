"""Built-in datasets from what installed packages ship (no download), plus generated ones.

Each builder returns native-resolution RGB pixels; tlcore.data.sources resizes them once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from tlcore.choices import GENERATED_PER_CLASS, PHOTOS


@dataclass
class Raw:
    pixels: np.ndarray  # N×h×w×3 uint8 (all the same size)
    labels: np.ndarray  # N int64
    classes: list[str]
    val_mask: np.ndarray | None = None  # a leakage-free split, where the source needs one


def photo(name: str) -> np.ndarray:
    """A bundled photo as H×W×3 uint8."""
    if name not in PHOTOS:
        raise ValueError(f"no bundled photo {name!r}; choose one of: {', '.join(PHOTOS)}")
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def digits(*, seed: int = 0, per_class: int | None = None) -> Raw:
    """scikit-learn's 1,797 handwritten digits, 8×8, 10 classes — far from ImageNet."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = (bunch.images / 16.0 * 255.0).round().astype(np.uint8)
    return Raw(_gray_to_rgb(gray), bunch.target.astype(np.int64), [str(d) for d in range(10)])


TEXTURE_SOURCES = ("brick", "grass", "gravel", "moon")


TEXTURES_PER_CLASS = GENERATED_PER_CLASS["textures"]  # crops made per class when none is asked for
SHAPES_PER_CLASS = GENERATED_PER_CLASS["shapes"]  # images generated per class when none is asked for


def textures(*, seed: int = 0, per_class: int | None = None, crop: int = 64) -> Raw:
    """Random crops of scikit-image's texture photos. Training crops come from the left three
    quarters of each photo and validation crops from the right quarter, so no validation pixel
    was seen in training (overlapping crops would make the task look easier than it is)."""
    import skimage.data

    n = per_class or TEXTURES_PER_CLASS
    rng = np.random.default_rng(seed)
    pixels, labels, val = [], [], []
    for label, name in enumerate(TEXTURE_SOURCES):
        photo = getattr(skimage.data, name)()
        photo = photo if photo.ndim == 3 else _gray_to_rgb(photo)
        h, w = photo.shape[:2]
        split = int(w * 0.75)
        for i in range(n):
            is_val = i % 5 == 0  # a fifth of each class validates
            x0, x1 = (split, w - crop) if is_val else (0, split - crop)
            x, y = rng.integers(x0, x1 + 1), rng.integers(0, h - crop + 1)
            tile = np.rot90(photo[y:y + crop, x:x + crop], k=int(rng.integers(4)))
            pixels.append(np.ascontiguousarray(tile))
            labels.append(label)
            val.append(is_val)
    return Raw(np.stack(pixels), np.array(labels, dtype=np.int64), list(TEXTURE_SOURCES), np.array(val))


def faces(*, seed: int = 0, per_class: int | None = None) -> Raw:
    """scikit-image's lfw_subset: 100 face and 100 non-face 25×25 crops."""
    import skimage.data

    gray = (skimage.data.lfw_subset() * 255.0).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * 100, dtype=np.int64)
    return Raw(_gray_to_rgb(gray), labels, ["face", "non-face"])


SHAPES = ("circle", "square", "triangle", "star")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(3)
    base, other = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == 0:  # stripes at a random angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        mask = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(5, 16))
        mask = ((xx // cell + yy // cell) % 2).astype(bool)
    else:  # smooth noise
        coarse = rng.random((6, 6))
        mask = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size),
                          Image.Resampling.BICUBIC)) > 127
    img = np.where(mask[..., None], base, other).astype(np.uint8)
    return Image.fromarray(img)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if shape == "square":
        angles, radii = [rot + k * math.pi / 2 + math.pi / 4 for k in range(4)], [r] * 4
    elif shape == "triangle":
        angles, radii = [rot + k * 2 * math.pi / 3 for k in range(3)], [r] * 3
    else:  # star
        angles = [rot + k * math.pi / 5 for k in range(10)]
        radii = [r if k % 2 == 0 else r * 0.45 for k in range(10)]
    return [(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii, strict=True)]


def shapes(*, seed: int = 0, per_class: int | None = None, canvas: int = 64) -> Raw:
    """Generated: one coloured shape (circle/square/triangle/star) on a textured background."""
    n = per_class or SHAPES_PER_CLASS
    rng = np.random.default_rng(seed)
    scale = 4  # draw large, then downsample: anti-aliased edges
    pixels, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(n):
            big = canvas * scale
            img = _background(rng, big)
            draw = ImageDraw.Draw(img)
            r = rng.uniform(0.18, 0.35) * big
            cx, cy = rng.uniform(r, big - r, 2)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=(0, 0, 0), width=scale)
            else:
                pts = _polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
                draw.polygon(pts, fill=colour, outline=(0, 0, 0), width=scale)
            pixels.append(np.asarray(img.resize((canvas, canvas), Image.Resampling.LANCZOS)))
            labels.append(label)
    return Raw(np.stack(pixels), np.array(labels, dtype=np.int64), list(SHAPES))


@dataclass(frozen=True)
class Builtin:
    name: str
    build: Callable[..., Raw]
    description: str
    generated_per_class: int | None = None  # made to order: this many per class unless asked (else a cap)


BUILTINS = {b.name: b for b in (
    Builtin("digits", digits, "scikit-learn handwritten digits: 1,797 grey 8×8 images, 10 classes "
            "(far from ImageNet)"),
    Builtin("textures", textures, "crops of scikit-image's brick, grass, gravel and moon-surface "
            "photos, 4 classes, train/val from disjoint regions", TEXTURES_PER_CLASS),
    Builtin("faces", faces, "scikit-image lfw_subset: 100 faces vs 100 non-faces, grey 25×25"),
    Builtin("shapes", shapes, "generated coloured circles, squares, triangles and stars on textured "
            "backgrounds, 4 classes, any size", SHAPES_PER_CLASS),
)}
