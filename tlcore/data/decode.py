"""Safe decoding of untrusted image bytes into fixed-size RGB uint8 arrays.

Pillow reads the header first, so format, pixel count and aspect ratio are checked before any
pixel is decoded (a decompression bomb costs nothing). JPEGs are then decoded straight at a
reduced scale with ``Image.draft`` — libjpeg's DCT scaling, 2–8× faster than decoding full size
and resizing, which torchvision.io.decode_jpeg cannot do on the CPU. JPEGs too small for that
scaling are decoded by torchvision on the CPU and resized in batches (see ``_decode_on_cpu``). On
a GPU, JPEGs are also decoded in batches by torchvision's nvJPEG path, beside the CPU threads.
Every mode becomes RGB.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import random
import threading
import time
import warnings
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tlcore.data.errors import DatasetError
from tlcore.device import free_cached_memory, working
from tlcore.settings import Limits, decode_threads

# torchvision 0.29 deprecates its decoders for TorchCodec's; they still work, and TorchCodec is not
# a dependency we can install offline yet. A filter for that one message, set once: the decoders
# run on the pool's threads, and warnings.catch_warnings() is not thread-safe.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

Reader = Callable[[], bytes]  # returns a file's bytes; may raise (unreadable member)

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class BadImage(Exception):
    """This file is not a usable image; ``str(err)`` is the reason shown to the user."""


@dataclass(frozen=True)
class Decoded:
    # 3×size×size uint8, contiguous: the dataset's layout, so the decoding threads make it (numpy's
    # copy runs without the GIL) instead of the main thread, one file at a time.
    chw: np.ndarray
    width: int  # original size, before any crop or resize
    height: int
    mode: str  # original Pillow mode, e.g. "RGB", "L", "P", "I;16"
    format: str
    # SHA-256 of the file's bytes (set by decode_all): what the dataset's fingerprint is made of, so
    # that it does not depend on which decoder (the GPU's or Pillow) happened to take the file.
    digest: bytes = b""

    @property
    def pixels(self) -> np.ndarray:
        """size×size×3 (a view)."""
        return self.chw.transpose(1, 2, 0)


def _open(data: bytes, limits: Limits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise BadImage(_why_not_an_image(data)) from None
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


# Leading bytes of formats people upload that Pillow is not allowed to parse here (each parser is
# attack surface), or of allowed formats whose header is broken: the reason then names the file's
# real format instead of "not an image".
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG whose header is corrupt"), (b"\xff\xd8\xff", "a JPEG whose header is corrupt"),
               (b"GIF8", "a GIF whose header is corrupt"), (b"BM", "a BMP whose header is corrupt"),
               (b"%PDF", "a PDF document, not an image"), (b"8BPS", "a Photoshop file (PSD), not supported"),
               (b"\x00\x00\x01\x00", "an icon file (ICO), not supported"))
_BRANDS = {b"avif": "an AVIF image, not supported", b"avis": "an AVIF image, not supported",
           b"heic": "a HEIC image (iPhone), not supported", b"heix": "a HEIC image (iPhone), not supported",
           b"mif1": "a HEIF image, not supported"}


def _why_not_an_image(data: bytes) -> str:
    allowed = f"allowed: {', '.join(ALLOWED_FORMATS)}"
    if not data:
        return "empty file (0 bytes)"
    if data[4:8] == b"ftyp" and data[8:12] in _BRANDS:
        return f"{_BRANDS[data[8:12]]} ({allowed}; convert it to JPEG or PNG)"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return f"an SVG drawing, not a bitmap ({allowed})"
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            return f"{what} ({allowed})"
    return f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})"


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
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image


def centre_box(h: int, w: int) -> tuple[int, int, int]:
    """(top, left, side) of an h×w image's centre square: every decoding path crops the same."""
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre square crop resized to size×size in one pass (the crop box bounds the work)."""
    w, h = image.size
    if w == h == size:
        return image  # resize() would copy it: one copy fewer per file, with the GIL held
    top, left, side = centre_box(h, w)
    # reducing_gap: a box-filter reduce first (much faster), which Pillow has not for 16-bit images.
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                        reducing_gap=None if image.mode.startswith("I;16") else 3.0)


def decode_bytes(data: bytes, size: int, limits: Limits, opened: Image.Image | None = None) -> Decoded:
    """Decode one untrusted file to size×size RGB, or raise BadImage with the reason. ``opened``:
    ``data`` as ``_open`` returned it, header checked and pixels not loaded yet."""
    image = opened or _open(data, limits)
    width, height, mode, fmt = image.width, image.height, image.mode, image.format or "?"
    try:
        if fmt == "JPEG":
            # Ask libjpeg for the smallest scale that still covers `size` on the short side.
            scale = min(width, height) / size
            image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        with _large_image_slot(image):
            image.load()
            upright(image)
            small = square_rgb(image, size)
        pixels = np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImage(f"corrupt or truncated image ({err})") from None
    return Decoded(pixels, width, height, mode, fmt)


def square_rgb(image: Image.Image, size: int) -> Image.Image:
    """The centre square at size×size as 8-bit RGB, resized before the mode is converted: a 40 MP
    16-bit or palette image converted, stretched and composited at full size took 0.7 GB a file on
    each decoding thread (a 5 KB PNG can be one). Palette and 1-bit images are converted first: a
    resize cannot interpolate palette indices."""
    if image.mode in ("1", "P", "PA"):
        image = image.convert("L" if image.mode == "1" else "RGBA" if _has_alpha(image) else "RGB")
    return to_rgb(square(image, size))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode == "PA" or "transparency" in image.info


# Non-JPEG images over this many pixels are decoded a few at a time (JPEGs decode scaled down):
# each holds up to 4 bytes a pixel at full size (160 MB at the 40 MP limit) while it is resized.
_LARGE_PIXELS = 16_000_000
_LARGE_AT_ONCE = threading.BoundedSemaphore(2)


@contextlib.contextmanager
def _large_image_slot(image: Image.Image):
    """Wait for one of the few slots for large full-size decodes, or pass straight on."""
    if image.format == "JPEG" or image.width * image.height <= _LARGE_PIXELS:
        yield
        return
    with _LARGE_AT_ONCE:
        try:
            yield
        finally:
            _give_back_freed_memory()


def _give_back_freed_memory() -> None:
    """glibc keeps what a thread freed in that thread's arena for its next malloc: after a few
    large images on each of 8 decoding threads the process held 2.2 GB it no longer used (the 16
    palette PNGs of 40 MP in 5 KB each of a hostile upload); malloc_trim returns it to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl, macOS and Windows have none)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned in place as its EXIF orientation says (not in place, exif_transpose copies
    an upright image), or left as stored when its Exif block is malformed: broken metadata does
    not make a photo unusable, and both decoding paths then agree on keeping it."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # SyntaxError, struct.error, ValueError… from Pillow's TIFF parser
        pass
    return image


def decode_photo(data: bytes, max_side: int, limits: Limits) -> np.ndarray:
    """One untrusted photo → H×W×3 uint8 RGB with its aspect kept and its longer side at most
    ``max_side`` (never enlarged), or BadImage with the reason. The same checks as a dataset's."""
    image = _open(data, limits)
    try:
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))  # libjpeg's DCT scaling, never below max_side
        image.load()
        return fit(to_rgb(upright(image)), max_side)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImage(f"corrupt or truncated image ({err})") from None


def fit(image: Image.Image, max_side: int) -> np.ndarray:
    """An RGB image shrunk (never enlarged) so its longer side is at most ``max_side``."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.array(image)


def decode_all(readers: Sequence[Reader], size: int, limits: Limits, *,
               jpeg_device: torch.device | None = None, pillow_workers: int | None = None,
               out: np.ndarray | None = None) -> list[Decoded | BadImage]:
    """Read and decode many files on all cores (the decoders release the GIL while decoding);
    without ``jpeg_device``, see ``_decode_on_cpu``.

    With ``jpeg_device`` (a GPU), plain RGB/grey JPEGs are decoded there in batches by
    torchvision (nvJPEG) *while* ``pillow_workers`` threads (default: PILLOW_BESIDE_DEVICE) decode from the
    other end of the same queue. The device's batches start small and grow, and never exceed its
    share of what is left at the two decoders' measured rates, so neither waits long for the
    other at the end and the slower one takes less. Which decoder takes a file depends on timing;
    the two agree to a few grey levels, and each Decoded carries its file's hash, so the
    dataset's fingerprint does not depend on which took it. Everything the device cannot take, and any batch it
    refuses, goes through Pillow. Reading happens in the worker threads too, so I/O overlaps
    decoding. ``out`` (len(readers)×3×size×size uint8): each file's pixels are put in its row
    by the thread that decoded it, and its Decoded holds that row.
    """
    out = np.empty((len(readers), 3, size, size), dtype=np.uint8) if out is None else out
    if jpeg_device is None:
        return _decode_on_cpu(readers, size, limits, out)
    # Files are read (and hashed) on the pool, so I/O overlaps, and their headers parsed here:
    # parsing is Python, and threads only queue for the interpreter lock (2,000 JPEGs on the
    # H200's 16 cores: 0.06 s in one thread, 0.13–0.35 s on the pool).
    blobs = _pool_map(lambda read: _guarded(lambda: _read_hashed(read)), readers)
    heads = [b if isinstance(b, BadImage) else _guarded(lambda b=b: _Head.of(*b, limits)) for b in blobs]
    del blobs
    results: list[Decoded | BadImage | None] = [h if isinstance(h, BadImage) else None for h in heads]
    queue = _SharedQueue(heads)

    def on_device(batch: list[int]) -> bool:
        try:
            pixels = decode_jpeg_batch([heads[i].data for i in batch], size, jpeg_device)
        except RuntimeError:  # one corrupt file fails the whole batch: those go through Pillow below
            return False
        out[batch] = pixels.numpy()
        for i in batch:
            h = heads[i]
            h.opened.clear()  # decoded here: Pillow's parsed header is not needed any more
            results[i] = Decoded(out[i], h.width, h.height, h.mode, "JPEG", h.digest)
        return True

    def by_pillow(i: int) -> Decoded | BadImage:
        return _placed(out, i, _guarded(lambda: decode_bytes(heads[i].data, size, limits, heads[i].take_opened())),
                       heads[i].digest)

    def with_pillow() -> None:
        while (i := queue.take_one(queue.sharing)) is not None:
            results[i] = by_pillow(i)
            queue.pillow_decoded()

    # Small JPEGs are left to a device faster than Pillow: Pillow spends most of a small file in
    # Python, and its threads then keep the device's feeding thread waiting for the interpreter
    # lock. Pillow shares them until the device's rate is known, so a slow device still gets help.
    small = queue.mean_batchable_pixels() < PILLOW_SHARES_FROM_PIXELS
    cap = _FIRST_DEVICE_BATCH
    batch = queue.take_batch(cap)  # the device's first batch is taken before the threads start
    threads = min(_POOL_SIZE, PILLOW_BESIDE_DEVICE) if pillow_workers is None else pillow_workers
    workers = [worker_pool().submit(with_pillow) for _ in range(threads)]
    decoded, seconds, first = 0, 0.0, True
    with working(jpeg_device):  # a latency measured meanwhile is marked as under load
        while batch:
            t0 = time.perf_counter()
            if on_device(batch) and not first:  # the first batch also pays the decoder's start-up
                decoded, seconds = decoded + len(batch), seconds + time.perf_counter() - t0
            first, cap = False, min(2 * cap, _DEVICE_BATCH)
            if seconds > 0 and small and queue.sharing:
                queue.sharing = not queue.device_outpaces_pillow(decoded / seconds)
            share = queue.device_share(decoded / seconds, threads) if seconds > 0 else cap
            batch = queue.take_batch(min(cap, share))
    # The decoding stream's cached blocks (up to ~3 GB for a batch of phone photos) would stay
    # reserved for it, out of reach of the trials and feature passes on the default stream.
    free_cached_memory()
    for worker in workers:
        worker.result()
    rest = [i for i, r in enumerate(results) if r is None]  # refused batches; Pillow-only files left
    for i, result in zip(rest, _pool_map(by_pillow, rest), strict=True):
        results[i] = result
    return results  # type: ignore[return-value]


def _decode_on_cpu(readers: Sequence[Reader], size: int, limits: Limits, out: np.ndarray) -> list[Decoded | BadImage]:
    """decode_all without a device. The pool's threads read, hash and check each file, then decode
    it: Pillow, to size×size, when its DCT scaling pays (a JPEG at least twice the size) or only
    Pillow takes it; otherwise (most small JPEGs) torchvision's libjpeg-turbo op at full size, and
    the thread resizes its task's squares of one side together with torch's uint8 kernel. On the
    2-core VM, for 2,000 JPEGs of 224×168 px: Pillow's load took 0.39 ms a file and its resize
    0.35 ms, much of each in Python; torchvision's decode took 0.24 ms, torch's resize 0.13 ms.
    Decoding took 0.83 s with the resize in the pool, 0.96 s in batches on the main thread (where
    it is serial: that kernel has no intra-op parallelism), 1.28 s one image at a time."""
    def decode_part(rows: Sequence[int]) -> list[Decoded | BadImage]:
        results, squares = [], {}
        for i in rows:
            result, square = _decode_one(readers[i], size, limits, out, i)
            if square is not None:
                squares.setdefault(square.shape[0], []).append((i, square))
            results.append(result)
        for group in squares.values():
            out[[i for i, _ in group]] = _squares_resized([square for _, square in group], size)
        return results

    return _pool_parts(decode_part, range(len(readers)))


def _decode_one(read: Reader, size: int, limits: Limits, out: np.ndarray, i: int
                ) -> tuple[Decoded | BadImage, np.ndarray | None]:
    """One file, on a pool thread: its Decoded (pixels in ``out[i]``) or BadImage, and the s×s×3
    square still to be resized into that row when torchvision decoded it."""
    try:
        data, digest = _read_hashed(read)
        image = _open(data, limits)
        if _torchvision_takes(image, data, size):
            try:
                pixels = _decode_jpeg_here(data)
            except RuntimeError:  # corrupt: Pillow names the problem, or decodes what it can
                pass
            else:
                # A copy of the square: the full decode (up to 447×22,000 px within the aspect
                # limit) is not kept alive until the task's resize.
                square = np.ascontiguousarray(_centre(pixels))
                return Decoded(out[i], image.width, image.height, image.mode, "JPEG", digest), square
        return _placed(out, i, decode_bytes(data, size, limits, image), digest), None
    except BadImage as err:
        return err, None


def _centre(pixels: np.ndarray) -> np.ndarray:
    """h×w×3 → its centre s×s×3 (a view)."""
    top, left, side = centre_box(*pixels.shape[:2])
    return pixels[top:top + side, left:left + side]


def _squares_resized(squares: list[np.ndarray], size: int) -> np.ndarray:
    """s×s×3 uint8 images of one side → N×3×size×size (any strides), on a pool thread: numpy
    stacks and copies (torch's copies would start an OpenMP team there, see worker_pool); torch
    only resizes, with its uint8 kernel, which runs on the calling thread alone."""
    stacked = np.stack(squares)
    if stacked.shape[1] == size:
        return stacked.transpose(0, 3, 1, 2)
    return resize_uint8(torch.from_numpy(stacked).permute(0, 3, 1, 2), size).numpy()


def _torchvision_takes(image: Image.Image, data: bytes, size: int) -> bool:
    """A JPEG that Pillow would decode at full size (its short side under twice ``size``, so no DCT
    scaling), and that needs nothing only Pillow does: plain RGB or grey, whole, upright; on a CPU
    whose uint8 resize stays on the calling thread."""
    return _RESIZE_STAYS_ON_THREAD and min(image.size) < 2 * size and _plain_jpeg(image, data)


# torch's vectorised uint8 resize (AVX2/AVX512) runs on the calling thread; its generic fallback
# (other x86 levels, ARM) splits outputs over 32,768 values across OpenMP threads, which a pool
# thread must never start (see worker_pool). There, small JPEGs go through Pillow as before.
_RESIZE_STAYS_ON_THREAD = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _decode_jpeg_here(data: bytes) -> np.ndarray:
    """h×w×3 uint8 from torchvision's CPU JPEG decoder, in this thread: its op runs libjpeg-turbo
    with the interpreter lock released and starts no OpenMP team (see worker_pool)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    # bytearray: torch.frombuffer warns on a read-only buffer (the copy is a file's few KB).
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


def _placed(out: np.ndarray, i: int, result: Decoded | BadImage, digest: bytes) -> Decoded | BadImage:
    """``result`` with its pixels moved into ``out[i]`` (in the decoding thread: numpy copies
    without the GIL) and its file's digest."""
    if isinstance(result, BadImage):
        return result
    out[i] = result.chw
    return replace(result, chw=out[i], digest=digest)


class _SharedQueue:
    """The files whose header passed, in one deque: the device takes batches from the front while
    they are device-decodable; Pillow threads take single files from the back, where the files
    only Pillow can decode (CMYK, PNG, truncated JPEGs…) wait, so those go first. The files are
    in a fixed shuffled order: in the folder's order (class by class) the device would decode the
    first classes and Pillow the last, and a model could learn the decoders' few grey levels of
    difference as a hint of the class."""

    def __init__(self, heads: list):
        ok = [i for i, h in enumerate(heads) if isinstance(h, _Head)]
        random.Random(0).shuffle(ok)
        self._items = deque(sorted(ok, key=lambda i: not heads[i].batchable))
        self._heads = heads
        self._lock = threading.Lock()
        self._started, self._by_pillow = time.perf_counter(), 0
        self.sharing = True  # Pillow's threads take the device's kind of file too (it stops for small ones)

    def pillow_decoded(self) -> None:
        with self._lock:
            self._by_pillow += 1

    def device_share(self, device_rate: float, pillow_threads: int) -> int:
        """Files the device should take of those left so that both decoders finish together,
        at its rate (files/s) and Pillow's so far (all of them when Pillow does not take the
        device's kind of file); none once it is slower than one Pillow thread (its feeding thread
        may then cost a core more than it gives)."""
        with self._lock:
            pillow_rate = self._pillow_rate()
            if pillow_threads and device_rate < pillow_rate / pillow_threads:
                return 0
            if not self.sharing:
                return len(self._items)
            return int(len(self._items) * device_rate / (device_rate + pillow_rate))

    def take_batch(self, limit: int) -> list[int]:
        """Up to ``limit`` device-decodable files, their pixels within _BATCH_PIXELS."""
        batch, pixels = [], 0
        with self._lock:
            while self._items and len(batch) < limit and (head := self._heads[self._items[0]]).batchable:
                n = head.width * head.height
                if batch and pixels + n > _BATCH_PIXELS:
                    break
                batch.append(self._items.popleft())
                pixels += n
        return batch

    def take_one(self, batchable_too: bool = True) -> int | None:
        """The file at the back: any, or only one the device cannot take."""
        with self._lock:
            if self._items and (batchable_too or not self._heads[self._items[-1]].batchable):
                return self._items.pop()
            return None

    def device_outpaces_pillow(self, device_rate: float) -> bool:
        with self._lock:
            return device_rate >= self._pillow_rate()

    def _pillow_rate(self) -> float:
        """Files Pillow's threads decoded per second so far (the lock held)."""
        return self._by_pillow / max(time.perf_counter() - self._started, 1e-9)

    def mean_batchable_pixels(self) -> float:
        sizes = [self._heads[i].width * self._heads[i].height for i in self._items if self._heads[i].batchable]
        return sum(sizes) / len(sizes) if sizes else 0.0


def decode_jpeg_batch(blobs: list[bytes], size: int, device: torch.device) -> torch.Tensor:
    """JPEG files → N×3×size×size uint8 (CPU), decoded together on ``device`` by torchvision,
    centre square crop, antialiased resize. EXIF orientation is applied on the CPU only:
    torchvision ignores it on a GPU, so ``decode_all`` sends files with the tag to Pillow."""
    # One buffer for the batch, split into views: two calls instead of a copy and a tensor per file.
    encoded = list(torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8).split([len(b) for b in blobs]))
    with _stream_of_its_own(device):
        return _decode_and_resize(encoded, size, device)


def _decode_and_resize(encoded: list[torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    # Images of one shape are cropped and resized together: a handful of kernels per shape instead
    # of per image (a dataset's files mostly share a few shapes), each call within _RESIZE_PIXELS.
    groups: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(k)
    # One copy to the CPU for the batch, then rows put in order there: a copy per shape group, or
    # rows indexed on the device with a list (a blocking copy of the index), would each wait for
    # the device once per group (phone photos come in many shapes).
    parts, order = [], []
    for (h, w), members in groups.items():
        top, left, side = centre_box(h, w)
        step = max(1, _RESIZE_PIXELS // (side * side))
        for start in range(0, len(members), step):
            ks = members[start:start + step]
            crops = torch.stack([images[k][:, top:top + side, left:left + side] for k in ks])  # squares only
            parts.append(resize_uint8(crops, size))
            order += ks
    resized = torch.cat(parts).cpu()
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    out[order] = resized
    return out


@contextlib.contextmanager
def _stream_of_its_own(device: torch.device):
    """On CUDA, the decoding runs on a stream of its own, idle when the decoder starts, one batch
    at a time. torchvision's decoder allocates its outputs on the current stream but writes them
    from another stream without waiting (pytorch/vision#9606; nvJPEG's hardware engine ignores
    stream order too, meta-pytorch/torchcodec#1634): on the default stream it could be handed a
    block just freed by a trial or another visitor's feature pass whose kernels still read it,
    and overwrite their numbers. A stream of its own only reuses its own blocks, whose work the
    last batch's copy to the CPU waited for. (torch.cuda.Stream takes one of PyTorch's pooled
    streams; nothing else in tlcore allocates on pooled streams.)"""
    if device.type != "cuda":
        yield
        return
    with _STREAMS_LOCK:
        stream = _STREAMS.get(str(device))
        if stream is None:
            stream = _STREAMS[str(device)] = torch.cuda.Stream(device=device)
        stream.synchronize()
        with torch.cuda.stream(stream):
            yield


_STREAMS: dict[str, torch.cuda.Stream] = {}
_STREAMS_LOCK = threading.Lock()  # two loads at once take turns on the decoding stream


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """N×3×h×w uint8 (square) → N×3×size×size uint8, bilinear with antialiasing (as Pillow's), in
    any memory layout (channels_last on the CPU)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.contiguous()  # a parallel copy when x is not contiguous: not on a pool thread
    if x.device.type == "cpu":
        # torch's uint8 kernel, vectorised for channels_last and made to match Pillow's resize:
        # 2,000 images of 168² → 224² on the 2-core VM took 0.085 ms each, where the float path
        # took 0.69 ms and Pillow 0.35 ms on one core. (GPUs have no uint8 kernel for it.)
        return torch.nn.functional.interpolate(x.contiguous(memory_format=torch.channels_last), size=(size, size),
                                               mode="bilinear", antialias=True, align_corners=False)
    y = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class _Head:
    """A file whose header passed the checks, with its bytes (pixels not decoded yet)."""

    data: bytes
    digest: bytes  # SHA-256 of data
    width: int
    height: int
    mode: str
    batchable: bool  # a JPEG the batched decoder handles (CMYK and friends go through Pillow)
    # The parsed header, for Pillow to decode from without parsing it again (taken once).
    opened: list[Image.Image] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, data: bytes, digest: bytes, limits: Limits) -> _Head:
        image = _open(data, limits)
        jpeg = image.format == "JPEG"
        # Only a JPEG's parsed header is kept: it is small, where a PNG's can hold 64 MB of unpacked
        # text chunks — a chunk of such files waiting for Pillow would take tens of GB.
        return cls(data, digest, image.width, image.height, image.mode,
                   _plain_jpeg(image, data),
                   [image] if jpeg else [])

    def take_opened(self) -> Image.Image | None:
        return self.opened.pop() if self.opened else None


def _plain_jpeg(image: Image.Image, data: bytes) -> bool:
    """A JPEG that torchvision's decoders take as Pillow would: RGB or grey (CMYK and friends go
    through Pillow), whole, upright."""
    return image.format == "JPEG" and image.mode in ("RGB", "L") and _ends_whole(data) and _upright(image)


def _upright(image: Image.Image) -> bool:
    """No orientation to apply. torchvision's GPU decoder ignores the EXIF tag (its CPU decoder and
    Pillow apply it), so a phone's portrait photo would come out sideways there: those go to Pillow.
    Pillow also reads the tag from XMP (tiff:Orientation), which torchvision never does."""
    if "exif" not in image.info and "xmp" not in image.info:
        return True  # getexif() would parse nothing: most files, with the interpreter lock held
    try:
        return image.getexif().get(0x0112, 1) == 1
    except Exception:  # a malformed Exif block (SyntaxError, struct.error…): Pillow's path, see upright()
        return False


def _ends_whole(data: bytes) -> bool:
    """The file ends with JPEG's end-of-image marker. nvJPEG decodes a truncated file without
    complaint (grey where the data stops) where Pillow refuses it; such files, and files with
    bytes after the marker, go through Pillow, which accepts or names the problem."""
    return data.rstrip(b"\0")[-2:] == b"\xff\xd9"


# Pillow threads beside a GPU's decoder. Measured on an H200 machine (16 cores, 2,000 JPEGs of
# 224×168 px, bench/data_speed.py --threads): 2,349 images/s beside the GPU with 4 threads, 1,426
# with 8, 1,452 with 16; Pillow alone ran 1,553 / 1,643 / 1,369 images/s — small files spend most
# of their time in Python, and more threads only queue for the interpreter lock.
PILLOW_BESIDE_DEVICE = 4
# Below this many pixels per JPEG on average (1 MP), Pillow's threads stop taking the JPEGs the
# device could decode once it is measured faster than them: on the H200, 2,000 JPEGs of 224 px
# took the GPU alone 0.37 s, the GPU beside 4 Pillow threads 0.59 s. Larger files are shared:
# libjpeg's DCT scaling makes Pillow fast there, and mostly outside the interpreter lock.
PILLOW_SHARES_FROM_PIXELS = 1_000_000

# Files per device batch: from 8, doubling up to 64 — a slow device (measured: torchvision's CPU
# decoder standing in, 4× slower than Pillow at 2 MP) then holds back little at the end; decoded
# pixels per batch: 12 MP phone photos × 64 ≈ 2.3 GB of uint8 at most.
_FIRST_DEVICE_BATCH = 8
# Source pixels resized in one call on the device: its float copy is 4 bytes per channel value
# (64 MP → 768 MB), so a batch of 64 phone photos is resized in pieces.
_RESIZE_PIXELS = 64_000_000
_DEVICE_BATCH = 64
_BATCH_PIXELS = 768_000_000


def _read(read: Reader) -> bytes:
    try:
        return read()
    except (DatasetError, OSError, EOFError, RuntimeError, zlib.error, zipfile.BadZipFile) as err:
        # zip CRC errors and inconsistent headers, truncation, a file gone since it was listed
        raise BadImage(f"unreadable ({err})") from None


def _read_hashed(read: Reader) -> tuple[bytes, bytes]:
    """A file's bytes and their SHA-256 (hashlib lets go of the interpreter lock on large buffers)."""
    data = _read(read)
    return data, hashlib.sha256(data).digest()


def _guarded(work: Callable[[], object]):
    try:
        return work()
    except BadImage as err:
        return err


def _pool_map(work: Callable[[object], object], items: Sequence) -> list:
    """``[work(x) for x in items]`` on the decoding pool."""
    return _pool_parts(lambda part: [work(x) for x in part], items)


def _pool_parts(work: Callable[[Sequence], list], items: Sequence) -> list:
    """``work`` on consecutive parts of ``items`` on the decoding pool, its results joined in order.
    Several items per task: one task per small JPEG cost more in futures and thread wake-ups than
    it gained (2,000 files of 224 px on the 2-core VM: 0.96 s one per task, 0.79 s in tasks of 50
    — medians of 5)."""
    per_task = max(1, min(_TASK_ITEMS, len(items) // (4 * _POOL_SIZE)))
    parts = [items[i:i + per_task] for i in range(0, len(items), per_task)]
    return [r for done in worker_pool().map(work, parts) for r in done]


_TASK_ITEMS = 32  # at most; fewer when there are few files, so every thread still gets several tasks
_POOL_SIZE = decode_threads()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def worker_pool() -> ThreadPoolExecutor:
    """One decoding pool for the process: threads are started once, not per dataset. Pillow,
    numpy and hashlib on these threads, and of torch only ops that run on the calling thread alone
    (torchvision's CPU JPEG decoder, the uint8 resize): a live thread that has run a torch op with
    intra-op parallelism keeps an OpenMP team, and the main thread's convolutions then ran 2.5×
    slower on the 2-core VM for as long as the pool lived (measured: Lite0 features 17 → 41 ms per
    image). tests/data/test_datasets.py counts the process's threads to hold this."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="tlcore-decode")
        return _POOL
