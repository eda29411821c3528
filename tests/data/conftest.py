"""Hostile and odd image files, made on the fly (nothing is downloaded)."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(seed: int, size=(48, 40), colour=None) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if colour is not None:
        arr[:] = colour
    return Image.fromarray(arr)


def jpeg(seed: int, **kw) -> bytes:
    return encode(photo(seed, **kw), "JPEG", quality=90)


def png(seed: int, **kw) -> bytes:
    return encode(photo(seed, **kw), "PNG")


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture
def good_entries() -> dict[str, bytes]:
    out = {}
    for i in range(6):
        out[f"cats/c{i}.jpg"] = jpeg(i)
        out[f"dogs/d{i}.png"] = png(100 + i)
    return out


@pytest.fixture
def bomb_png() -> bytes:
    # 10,000 × 10,000 one-bit pixels: a tiny file whose header claims 100 MP.
    return encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True)
