"""Decoding without a device: small plain JPEGs go through torchvision's decoder and a batched
resize, everything else through Pillow, and the two ways must agree with each other."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import encode, jpeg, png
from tlcore.data import decode
from tlcore.data.decode import BadImage, Decoded, decode_all, decode_bytes, resize_uint8
from tlcore.settings import Limits

# Where torch's uint8 resize would split its work across OpenMP threads (CPUs without AVX2), small
# JPEGs go through Pillow like everything else, and there is no second route to test.
two_routes = pytest.mark.skipif(not decode._RESIZE_STAYS_ON_THREAD, reason="one route on this CPU (no AVX2)")


def smooth_photo(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8))


def rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@two_routes
def test_small_plain_jpegs_take_torchvision_and_agree_with_pillow(monkeypatch):
    files = {
        "small": encode(smooth_photo(64, 48), "JPEG", quality=95),  # short side 48 < 2 × 32
        "small grey": encode(smooth_photo(40, 60).convert("L"), "JPEG", quality=95),
        "large": encode(smooth_photo(200, 150), "JPEG", quality=95),  # Pillow's DCT scaling pays
        "png": encode(smooth_photo(64, 48), "PNG"),
        "cmyk": encode(smooth_photo(64, 48).convert("CMYK"), "JPEG"),
        "rotated": rotated(smooth_photo(64, 48)),
        "truncated": encode(smooth_photo(64, 48), "JPEG", quality=95)[:-200],
    }
    by_pillow, real = [], decode.decode_bytes
    monkeypatch.setattr(decode, "decode_bytes", lambda data, *a: by_pillow.append(data) or real(data, *a))
    results = dict(zip(files, decode_all([(lambda b=b: b) for b in files.values()], 32, Limits()), strict=True))
    assert [name for name, blob in files.items() if blob in by_pillow] == ["large", "png", "cmyk", "rotated",
                                                                         "truncated"]
    assert isinstance(results["truncated"], BadImage) and "truncated" in str(results["truncated"])
    for name in ("small", "small grey"):
        got, ref = results[name], real(files[name], 32, Limits())
        assert isinstance(got, Decoded) and got.chw.shape == (3, 32, 32) and got.chw.flags.c_contiguous
        assert (got.width, got.height, got.mode, got.format) == (ref.width, ref.height, ref.mode, "JPEG")
        assert np.abs(got.chw.astype(float) - ref.chw.astype(float)).mean() < 2  # grey levels out of 255
        assert got.digest == hashlib.sha256(files[name]).digest()


@two_routes
@pytest.mark.parametrize("per_task", [32, 1])  # squares of one side resized together, or one by one
def test_every_file_lands_in_its_row_whatever_its_shape(monkeypatch, per_task):
    monkeypatch.setattr(decode, "_TASK_ITEMS", per_task)
    monkeypatch.setattr(decode, "_POOL_SIZE", 2)  # tasks of several files on any machine
    groups, real = [], decode._squares_resized
    monkeypatch.setattr(decode, "_squares_resized", lambda squares, size: groups.append(len(squares)) or real(squares, size))
    sizes = [(40, 60), (40, 60), (60, 40), (30, 40), (24, 30), (30, 24), (64, 48), (48, 48)] * 6  # the last two: Pillow's
    blobs = [jpeg(k, size=s) for k, s in enumerate(sizes)] + [png(9)]
    out = np.zeros((len(blobs), 3, 24, 24), dtype=np.uint8)
    results = decode_all([(lambda b=b: b) for b in blobs], 24, Limits(), out=out)
    assert max(groups) > 1 if per_task > 1 else max(groups) == 1
    for k, (blob, result) in enumerate(zip(blobs, results, strict=True)):
        alone = decode_all([lambda b=blob: b], 24, Limits())[0]
        assert np.shares_memory(result.chw, out[k]) and np.array_equal(out[k], alone.chw)
        assert np.abs(alone.chw.astype(float) - decode_bytes(blob, 24, Limits()).chw.astype(float)).mean() < 12


def damaged_jpegs() -> list[bytes]:
    """A small JPEG with 1–5 random bytes changed (60 ways), and cut short with and without an end
    marker put back."""
    rng = np.random.default_rng(0)
    whole = jpeg(3, size=(48, 40))  # short side under twice the size: torchvision's
    damaged = []
    for _ in range(60):
        blob = bytearray(whole)
        for k in rng.integers(2, len(whole) - 2, size=rng.integers(1, 6)):
            blob[k] = rng.integers(0, 256)
        damaged.append(bytes(blob))
    for cut in range(200, len(whole) - 2, 97):
        damaged += [whole[:cut], whole[:cut] + b"\xff\xd9"]
    return damaged


def pillow_keeps(blob: bytes) -> bool:
    try:
        decode_bytes(blob, 24, Limits())
    except BadImage:
        return False
    return True


def test_a_damaged_jpeg_is_accepted_only_where_pillow_accepts_it(monkeypatch):
    """torchvision's decoder is more lenient than Pillow on a truncated file (it fills in grey): a
    file is kept exactly when Pillow alone would keep it, whichever decoder took it."""
    taken, real = [], decode._decode_jpeg_here
    monkeypatch.setattr(decode, "_decode_jpeg_here", lambda data: taken.append(1) or real(data))
    damaged = damaged_jpegs()
    results = decode_all([(lambda b=b: b) for b in damaged], 24, Limits())
    kept = [not isinstance(r, BadImage) for r in results]
    assert kept == [pillow_keeps(b) for b in damaged]
    assert 0 < sum(kept) < len(kept)  # both kinds were made
    assert len(taken) > len(damaged) // 2 or not decode._RESIZE_STAYS_ON_THREAD  # most went to torchvision first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_damaged_jpeg_that_reaches_the_gpu_is_kept_only_where_pillow_keeps_it():
    """The same files with no Pillow thread beside the GPU: every file the device can take goes to it."""
    damaged = damaged_jpegs()
    results = decode_all([(lambda b=b: b) for b in damaged], 24, Limits(), jpeg_device=torch.device("cuda"),
                         pillow_workers=0)
    kept = [not isinstance(r, BadImage) for r in results]
    assert kept == [pillow_keeps(b) for b in damaged]


@pytest.mark.parametrize(("side", "size"), [(168, 224), (300, 224), (90, 32)])
def test_the_cpu_resize_is_pillows_to_one_grey_level(side, size):
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    ours = resize_uint8(torch.from_numpy(pixels).permute(2, 0, 1)[None], size)[0].permute(1, 2, 0).numpy()
    pillows = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    assert np.abs(ours.astype(int) - pillows.astype(int)).max() <= 1


@pytest.mark.parametrize("device", [None, torch.device("cpu")])  # the CPU path; the GPU path's stand-in
def test_a_malformed_exif_block_leaves_the_photo_as_stored(device):
    """Pillow parses a JPEG's Exif lazily when the file also has JFIF density: a malformed block
    raised out of the orientation check and stopped the whole load, or (through Pillow) rejected
    a photo whose pixels are fine."""
    import io

    blob = io.BytesIO()
    smooth_photo(64, 48).save(blob, "JPEG", quality=95, dpi=(300, 300), exif=b"Exif\0\0garbage!")
    blob = blob.getvalue()
    plain = decode_bytes(encode(smooth_photo(64, 48), "JPEG", quality=95), 32, Limits()).chw.astype(float)
    assert np.abs(decode_bytes(blob, 32, Limits()).chw - plain).mean() < 1
    result = decode_all([lambda: blob, lambda: jpeg(1)], 32, Limits(), jpeg_device=device)
    assert all(isinstance(r, Decoded) for r in result)
    assert np.abs(result[0].chw - plain).mean() < 2
