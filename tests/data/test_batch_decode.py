"""The batched JPEG path (nvJPEG on a GPU) — run here on the CPU through the same code: it must
agree with the Pillow path, honour EXIF orientation, and route what it cannot take to Pillow."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import encode, jpeg, png
from tlcore.data.decode import BadImage, Decoded, decode_all, decode_bytes, decode_jpeg_batch
from tlcore.settings import Limits

CPU = torch.device("cpu")


def smooth_photo(w: int, h: int) -> Image.Image:
    # Smooth gradients: resampling differences stay small, unlike on pixel noise.
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)
    return Image.fromarray(arr)


def test_batch_decode_agrees_with_the_pillow_path():
    blobs = [encode(smooth_photo(320, 240), "JPEG", quality=95),
             encode(smooth_photo(200, 300).convert("L"), "JPEG", quality=95)]
    batch = decode_jpeg_batch(blobs, 64, CPU)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.uint8
    for k, blob in enumerate(blobs):
        ref = torch.from_numpy(decode_bytes(blob, 64, Limits()).pixels).permute(2, 0, 1)
        assert (batch[k].float() - ref.float()).abs().mean() < 4  # grey levels out of 255


@pytest.mark.parametrize("resize_pixels", [64_000_000, 1])  # one resize per shape, or one per image
def test_batch_decode_keeps_the_files_order_across_shapes(monkeypatch, resize_pixels):
    from tlcore.data import decode

    monkeypatch.setattr(decode, "_RESIZE_PIXELS", resize_pixels)
    images = [smooth_photo(320, 240), smooth_photo(200, 300), smooth_photo(320, 240).rotate(180),
              smooth_photo(200, 300).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    blobs = [encode(image, "JPEG", quality=95) for image in images]
    batch = decode_jpeg_batch(blobs, 48, CPU)
    alone = torch.cat([decode_jpeg_batch([blob], 48, CPU) for blob in blobs])
    assert torch.equal(batch, alone)
    assert (batch[0].float() - batch[2].float()).abs().mean() > 20  # the same shape, other pixels


def test_batch_decode_applies_exif_orientation():
    image = smooth_photo(320, 160)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    blob = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    batch = decode_jpeg_batch([blob], 32, CPU)[0]
    ref = torch.from_numpy(decode_bytes(blob, 32, Limits()).pixels).permute(2, 0, 1)
    unrotated = decode_jpeg_batch([encode(image, "JPEG", quality=95)], 32, CPU)[0]
    assert (batch.float() - ref.float()).abs().mean() < 4
    assert (unrotated.float() - ref.float()).abs().mean() > 20  # the tag really changed the result


def test_batched_routing_falls_back_to_pillow_for_what_it_cannot_take():
    cmyk = encode(Image.new("CMYK", (40, 40), (0, 255, 0, 0)), "JPEG")
    whole = jpeg(1, size=(200, 150))
    truncated = whole[: len(whole) // 2]  # a valid header: it reaches the batch and fails it
    with pytest.raises(RuntimeError):
        decode_jpeg_batch([jpeg(0), truncated], 16, CPU)

    def unreadable():
        raise OSError("CRC check failed")

    files = [jpeg(0), png(1), cmyk, truncated, jpeg(2)]
    readers = [(lambda b=b: b) for b in files] + [unreadable]
    results = decode_all(readers, 16, Limits(), jpeg_device=CPU)
    plain = decode_all(readers, 16, Limits())
    kinds = [type(r) for r in results]
    assert kinds == [Decoded, Decoded, Decoded, BadImage, Decoded, BadImage]
    assert kinds == [type(r) for r in plain]
    assert "truncated" in str(results[3])  # the batch failed; Pillow named the culprit
    assert "unreadable" in str(results[5]) and "CRC" in str(results[5])
    assert results[2].pixels[..., 1].mean() < 60  # CMYK magenta ink through Pillow: little green
    for r in results:
        if isinstance(r, Decoded):
            assert r.pixels.shape == (16, 16, 3) and r.pixels.dtype == np.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_decode_on_the_gpu_matches_the_cpu():
    blobs = [encode(smooth_photo(640, 480), "JPEG", quality=95) for _ in range(4)]
    blobs += [encode(smooth_photo(480, 640).convert("L"), "JPEG", quality=95)]  # grey, portrait
    gpu = decode_jpeg_batch(blobs, 128, torch.device("cuda"))
    cpu = decode_jpeg_batch(blobs, 128, CPU)
    assert (gpu.float() - cpu.float()).abs().mean() < 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decoding_never_writes_into_memory_that_queued_kernels_still_read():
    """pytorch/vision#9606's case: blocks freed on the default stream while reductions of them are
    still queued behind a long kernel, then a decode. torchvision's decoder, on the default stream,
    would be handed those blocks and overwrite them before the reductions read them."""
    dev = torch.device("cuda")
    blobs = [encode(smooth_photo(640, 480), "JPEG", quality=95) for _ in range(8)]
    nbytes = 3 * 480 * 640  # a decoded photo's size: the allocator's first pick for its output
    for _ in range(5):
        blocks = [torch.full((nbytes,), k + 1, dtype=torch.uint8, device=dev) for k in range(16)]
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU time before the reductions run
        sums = [b.sum(dtype=torch.int64) for b in blocks]
        del blocks
        decode_jpeg_batch(blobs, 64, dev)
        torch.cuda.synchronize()
        assert [int(s) for s in sums] == [(k + 1) * nbytes for k in range(16)]


def rotated_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(smooth_photo(320, 160), "JPEG", quality=95, exif=exif.tobytes())


def xmp_rotated_jpeg(orientation: int) -> bytes:
    """The orientation in XMP only (no EXIF), as some editors write it; Pillow applies it too."""
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
           '</rdf:RDF></x:xmpmeta>').encode()
    return encode(smooth_photo(320, 160), "JPEG", quality=95, xmp=xmp)


def test_a_jpeg_with_an_orientation_tag_goes_to_pillow():
    """torchvision's GPU decoder ignores EXIF orientation (its CPU one applies it, and neither reads
    XMP's): a portrait photo would come out sideways there, so only upright files go to the device."""
    from tlcore.data.decode import _Head

    assert not _Head.of(rotated_jpeg(6), b"", Limits()).batchable
    assert not _Head.of(xmp_rotated_jpeg(6), b"", Limits()).batchable
    turned, plain = (decode_bytes(blob, 32, Limits()).chw.astype(float) for blob in (xmp_rotated_jpeg(6), rotated_jpeg(1)))
    assert abs(turned - plain).mean() > 10  # Pillow does turn it
    assert _Head.of(rotated_jpeg(1), b"", Limits()).batchable
    assert _Head.of(xmp_rotated_jpeg(1), b"", Limits()).batchable
    assert _Head.of(encode(smooth_photo(320, 160), "JPEG", quality=95), b"", Limits()).batchable


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_a_rotated_photo_comes_out_as_pillow_shows_it():
    blobs = [rotated_jpeg(6)] * 3 + [xmp_rotated_jpeg(8)] * 2 + [rotated_jpeg(1)] * 20
    results = decode_all([(lambda b=b: b) for b in blobs], 32, Limits(), jpeg_device=torch.device("cuda"))
    for blob, r in zip(blobs, results, strict=True):
        ref = decode_bytes(blob, 32, Limits()).pixels
        assert abs(r.pixels.astype(float) - ref.astype(float)).mean() < 4


def test_a_truncated_jpeg_never_reaches_a_lenient_gpu_decoder(monkeypatch):
    # nvJPEG decodes a truncated file without an error (measured on an H100); stand in for it with
    # a decoder that accepts anything: the file must still be refused, as Pillow refuses it.
    from tlcore.data import decode

    seen = []

    def lenient(blobs, size, device):
        seen.extend(blobs)
        return torch.zeros((len(blobs), 3, size, size), dtype=torch.uint8)

    monkeypatch.setattr(decode, "decode_jpeg_batch", lenient)
    whole = jpeg(1, size=(200, 150))
    truncated = whole[: len(whole) // 2]
    padded = whole + b"\0" * 16  # zero padding after the end marker: still a whole file
    results = decode_all([lambda: whole, lambda: truncated, lambda: padded], 16, Limits(), jpeg_device=CPU)
    assert [type(r) for r in results] == [Decoded, BadImage, Decoded]
    assert "truncated" in str(results[1]) and truncated not in seen and whole in seen and padded in seen


def test_the_device_and_pillow_share_the_files_and_the_slower_takes_less(monkeypatch):
    """A device slower than Pillow (here: one that waits until Pillow has done the rest) gets its
    first batch only; Pillow's threads take everything else from the other end of the queue."""
    import threading

    from tlcore.data import decode

    n = decode._DEVICE_BATCH * 3
    files = [jpeg(i % 7) for i in range(n)]
    pillow_done, lock, by_pillow, device_batches = threading.Event(), threading.Lock(), [], []
    real_decode_bytes = decode.decode_bytes

    def counting_pillow(data, size, limits, opened=None):
        out = real_decode_bytes(data, size, limits, opened)
        with lock:
            by_pillow.append(1)
            if len(by_pillow) == n - decode._FIRST_DEVICE_BATCH:
                pillow_done.set()
        return out

    def slow_device(blobs, size, device):
        device_batches.append(len(blobs))
        assert pillow_done.wait(timeout=30), "Pillow's threads did not run beside the device"
        return torch.zeros((len(blobs), 3, size, size), dtype=torch.uint8)

    monkeypatch.setattr(decode, "decode_bytes", counting_pillow)
    monkeypatch.setattr(decode, "decode_jpeg_batch", slow_device)
    results = decode_all([(lambda b=b: b) for b in files], 16, Limits(), jpeg_device=CPU, pillow_workers=2)
    assert device_batches == [decode._FIRST_DEVICE_BATCH] and len(by_pillow) == n - decode._FIRST_DEVICE_BATCH
    assert all(isinstance(r, Decoded) for r in results)
    assert sum(int(r.pixels.max()) == 0 for r in results) == decode._FIRST_DEVICE_BATCH  # the device's zeros


def test_beside_a_faster_device_pillow_stops_taking_small_jpegs(monkeypatch):
    """Small files keep Pillow in Python, where its threads slow the device's feeding thread down:
    once the device is measured faster, Pillow decodes only what the device cannot take (PNGs)."""
    import time

    from tlcore.data import decode

    by_pillow, real = [], decode.decode_bytes
    monkeypatch.setattr(decode, "decode_bytes", lambda data, *a: by_pillow.append(data[:4]) or real(data, *a))

    def device(blobs, size, dev):  # 5,000 files/s: Pillow would take a good share of them
        time.sleep(2e-4 * len(blobs))
        return torch.zeros((len(blobs), 3, size, size), dtype=torch.uint8)

    monkeypatch.setattr(decode, "decode_jpeg_batch", device)
    monkeypatch.setattr(decode._SharedQueue, "device_outpaces_pillow", lambda self, rate: True)
    # …and never judged slower than one Pillow thread, which a loaded machine's late wake-ups from
    # the sleep above could make it (a CI run saw the device get no share, Pillow every file).
    monkeypatch.setattr(decode._SharedQueue, "device_share", lambda self, rate, threads: len(self._items))
    files = [jpeg(i % 7) for i in range(1000)] + [png(i) for i in range(3)]
    results = decode_all([(lambda b=b: b) for b in files], 16, Limits(), jpeg_device=CPU, pillow_workers=2)
    assert all(isinstance(r, Decoded) for r in results)
    pngs = by_pillow.count(b"\x89PNG")
    assert pngs == 3 and len(by_pillow) - pngs < 100  # a few while the device's rate was unknown


def test_without_pillow_threads_the_device_takes_every_jpeg_it_can(monkeypatch):
    from tlcore.data import decode

    batches, real = [], decode.decode_jpeg_batch
    monkeypatch.setattr(decode, "decode_jpeg_batch", lambda blobs, *a: batches.append(len(blobs)) or real(blobs, *a))
    files = [jpeg(i % 7) for i in range(8 + 16 + 32 + 13)] + [png(0)]
    results = decode_all([(lambda b=b: b) for b in files], 16, Limits(), jpeg_device=CPU, pillow_workers=0)
    with_pillow = decode_all([(lambda b=b: b) for b in files], 16, Limits())
    assert batches == [8, 16, 32, 13] and decode._FIRST_DEVICE_BATCH == 8  # growing; the PNG through Pillow
    assert all(isinstance(r, Decoded) for r in results)
    for a, b in zip(results, with_pillow, strict=True):  # torchvision's decoder against Pillow's
        assert abs(a.pixels.astype(float) - b.pixels.astype(float)).mean() < 12


def test_beside_a_device_only_a_few_pillow_threads_decode(monkeypatch):
    """More threads only queue for the interpreter lock on small files (measured on 16 cores)."""
    from tlcore.data import decode

    real_pool, submitted = decode.worker_pool(), []

    class Counting:
        def map(self, *args, **kwargs):
            return real_pool.map(*args, **kwargs)

        def submit(self, fn, *args):
            submitted.append(fn)
            return real_pool.submit(fn, *args)

    monkeypatch.setattr(decode, "_POOL_SIZE", 16)
    monkeypatch.setattr(decode, "worker_pool", Counting)
    results = decode_all([(lambda i=i: jpeg(i % 7)) for i in range(20)], 16, Limits(), jpeg_device=CPU)
    assert len(submitted) == decode.PILLOW_BESIDE_DEVICE < 16
    assert all(isinstance(r, Decoded) for r in results)


def test_only_a_jpegs_parsed_header_waits_for_pillow():
    """A PNG's parsed header can hold 64 MB of unpacked text chunks: 512 waiting in a chunk would
    take 32 GB, so only JPEG headers (no bigger than their file) are kept for Pillow."""
    from tlcore.data import decode

    assert len(decode._Head.of(jpeg(1), b"", Limits()).opened) == 1
    assert decode._Head.of(png(1), b"", Limits()).opened == []


def test_the_device_takes_files_from_every_part_of_the_folder(monkeypatch):
    """Files come class folder by class folder. Taken in that order, the device would decode the
    first classes and Pillow the last, and a model could learn the two decoders' few grey levels
    of difference as a hint of the class: the device's first batch already spans the folder."""
    from tlcore.data import decode

    files = [jpeg(i) for i in range(64)]
    batches = []

    def device(blobs, size, dev):
        batches.append([files.index(b) for b in blobs])
        return torch.zeros((len(blobs), 3, size, size), dtype=torch.uint8)

    monkeypatch.setattr(decode, "decode_jpeg_batch", device)
    decode_all([(lambda b=b: b) for b in files], 16, Limits(), jpeg_device=CPU, pillow_workers=0)
    first = batches[0]  # taken before any Pillow thread starts: the same files every time
    assert len(first) == decode._FIRST_DEVICE_BATCH and min(first) < 32 <= max(first)
    assert sorted(i for b in batches for i in b) == list(range(64))
