"""Decode speed: a naive per-image PIL loop vs tlcore.data (cold, then from its cache).

    python bench/data_speed.py [--images 300] [--size 224] [--widths 1024 2048] [--repeat 3]
                               [--jpeg-device cuda|cpu] [--threads 4 8 16] [--decoders-only]

For each source width, writes JPEGs made from scikit-image's bundled photos into a temp folder,
then in one process times (1) the naive loop (open → convert RGB → resize → tensor, one image at
a time), (2) tlcore.data.load_folder on a cold cache (header checks, DCT-scaled JPEG decode on all
cores — or batched nvJPEG on a GPU —, fingerprint, writing the cache) and (3) the same call again
(decoded-tensor cache). Each is the median of --repeat runs (a fresh cache folder per cold run);
a GPU's decoder is started once before any of them (see ``warm_up``).
Then two parts of the cold load beside what they replaced: the folder listing (os.walk and
pathlib per file) and the cache's format (one torch.save record with the pixels). Where JPEGs
have a batch decoder (a GPU's nvJPEG; ``--jpeg-device cpu`` lets torchvision's CPU decoder stand
in), the decoding alone three ways: the CPU path's threads (Pillow, and torchvision's CPU decoder for
small JPEGs), the device alone, both sharing the files (what a load does, with Pillow threads beside
the device) — the shared way must not be slower than the CPU path.
Prints images/s and the ratios per width: the ratio grows with the source size, because ours
decodes large JPEGs at a reduced DCT scale while the naive loop decodes and resizes every pixel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

UNIQUE = 20  # distinct files; the rest are copies (decoding cost is the same, writing 2 MP noise is not)


def make_jpegs(root: Path, n: int, width: int) -> None:
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
              skimage.data.rocket(), skimage.data.hubble_deep_field()]
    rng = np.random.default_rng(0)
    made: list[bytes] = []
    for i in range(n):
        folder = root / f"class{i % len(photos)}"
        folder.mkdir(parents=True, exist_ok=True)
        if i >= UNIQUE:
            (folder / f"{i:05d}.jpg").write_bytes(made[i % UNIQUE])
            continue
        src = Image.fromarray(photos[i % len(photos)])
        img = src.resize((width, width * 3 // 4), Image.Resampling.BILINEAR)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (width * 3 // 4, width, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
        made.append((folder / f"{i:05d}.jpg").read_bytes())


def warm_up(device: torch.device) -> None:
    """The device's decoder started before any timing: its start-up (on a GPU, the CUDA context and
    nvJPEG's handle, about a second) is paid once per process, not by each load — the app's first
    load pays it, the ones after do not."""
    import io

    from tlcore.data.decode import decode_jpeg_batch

    blob = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(blob, "JPEG")
    decode_jpeg_batch([blob.getvalue()], 16, device)


def naive(root: Path, size: int) -> torch.Tensor:
    files = sorted(root.rglob("*.jpg"))
    return torch.stack([pil_to_tensor(Image.open(f).convert("RGB").resize((size, size))) for f in files])


def _median_seconds(work, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_width(tmp: Path, n: int, width: int, size: int, repeat: int,
                jpeg_device: torch.device | None, threads: list[int], decoders_only: bool = False) -> None:
    """Time the three ways for one source width, printing each line as soon as it is measured
    (large sources take minutes: a silent bench looks hung)."""
    from tlcore import data

    root = tmp / f"jpegs{width}"
    make_jpegs(root, n, width)
    runs = iter(range(10**6))
    print(f"\nsources {width}×{width * 3 // 4}", flush=True)
    if decoders_only:
        _bench_decoding(root, size, repeat, jpeg_device, threads)
        return

    def cold() -> tuple[float, float]:
        """Seconds until the load returns, and until its cache file is on disk (a large one is
        written in the background, while the user's work starts)."""
        os.environ["TLCORE_HOME"] = str(tmp / f"home{width}-{next(runs)}")  # an empty cache each time
        t0 = time.perf_counter()
        assert len(data.load_folder(root, size=size)) == n
        returned = time.perf_counter() - t0
        data.sources.finish_writes()
        return returned, time.perf_counter() - t0

    t_naive = _median_seconds(lambda: naive(root, size), repeat)
    print(f"  naive PIL loop        {t_naive:8.2f} s  {n / t_naive:9.1f} images/s", flush=True)
    colds = [cold() for _ in range(repeat)]
    t_cold, t_on_disk = statistics.median(c[0] for c in colds), statistics.median(c[1] for c in colds)
    print(f"  tlcore.data (cold)    {t_cold:8.2f} s  {n / t_cold:9.1f} images/s  (its cache on disk after "
          f"{t_on_disk:.2f} s)", flush=True)
    t_warm = _median_seconds(lambda: data.load_folder(root, size=size), repeat)
    print(f"  tlcore.data (cached)  {t_warm:8.2f} s  {n / t_warm:9.1f} images/s", flush=True)
    print(f"  ratio cold: {t_naive / t_cold:.2f}")
    print(f"  ratio cached: {t_naive / t_warm:.1f}", flush=True)
    bench_phases(root, size, jpeg_device)
    bench_parts(tmp, root, data.load_folder(root, size=size), repeat)
    _bench_decoding(root, size, repeat, jpeg_device, threads)


def bench_phases(root: Path, size: int, jpeg_device: torch.device | None) -> None:
    """Where a cold load's time goes, its steps run one after another as load_folder runs them:
    the folder listing, the decoding (into the dataset's buffer; each file hashed as it is read),
    the content fingerprint (of those hashes) and the near-duplicate count. What the load took beyond their sum is its bookkeeping and cache write."""
    from tlcore.data import archive, decode
    from tlcore.data.dataset import duplicate_groups, fingerprint
    from tlcore.settings import limits

    t0 = time.perf_counter()
    members, _ = archive.folder_members(root, limits())
    t1 = time.perf_counter()
    pixels = np.empty((len(members), 3, size, size), dtype=np.uint8)
    decoded = decode.decode_all([m.read for m in members], size, limits(), jpeg_device=jpeg_device, out=pixels)
    t2 = time.perf_counter()
    images = torch.from_numpy(pixels)
    fingerprint(images, torch.zeros(len(members), dtype=torch.long), ["a"], files=[d.digest for d in decoded])
    t3 = time.perf_counter()
    duplicate_groups(images)
    t4 = time.perf_counter()
    print(f"  a cold load's steps: listing {(t1 - t0) * 1e3:.1f} ms, decoding {t2 - t1:.3f} s, fingerprint "
          f"{(t3 - t2) * 1e3:.1f} ms, duplicates {(t4 - t3) * 1e3:.1f} ms", flush=True)


def _bench_decoding(root: Path, size: int, repeat: int, jpeg_device: torch.device | None,
                    threads: list[int]) -> None:
    if jpeg_device is not None:
        bench_decoders(root, size, jpeg_device, repeat)
    if threads:
        bench_threads(root, size, jpeg_device, repeat, threads)


def _readers(root: Path) -> list:
    return [(lambda f=f: f.read_bytes()) for f in sorted(root.rglob("*.jpg"))]


def bench_threads(root: Path, size: int, jpeg_device: torch.device | None, repeat: int,
                  counts: list[int]) -> None:
    """Decoding alone with CPU pools of each size (and beside the device, where there is one):
    on a many-core machine, threads that take turns holding the GIL can cost more than they give."""
    from concurrent.futures import ThreadPoolExecutor

    from tlcore.data import decode
    from tlcore.settings import limits

    readers = _readers(root)
    pool, pool_size = decode._POOL, decode._POOL_SIZE
    try:
        for k in counts:
            decode._POOL, decode._POOL_SIZE = ThreadPoolExecutor(k), k
            t_pillow = _median_seconds(lambda: decode.decode_all(readers, size, limits()), repeat)
            line = f"  {k:3d} CPU threads: {len(readers) / t_pillow:8.1f} images/s"
            if jpeg_device is not None:
                t_both = _median_seconds(lambda k=k: decode.decode_all(readers, size, limits(), jpeg_device=jpeg_device,
                                                                         pillow_workers=k), repeat)
                line += f", beside {jpeg_device} {len(readers) / t_both:8.1f} images/s"
            print(line, flush=True)
            decode._POOL.shutdown()
    finally:
        decode._POOL, decode._POOL_SIZE = pool, pool_size


def bench_decoders(root: Path, size: int, jpeg_device: torch.device, repeat: int) -> None:
    from tlcore.data import decode
    from tlcore.settings import limits

    readers = _readers(root)
    t_pillow = _median_seconds(lambda: decode.decode_all(readers, size, limits()), repeat)
    t_device = _median_seconds(lambda: decode.decode_all(readers, size, limits(), jpeg_device=jpeg_device,
                                                         pillow_workers=0), repeat)
    t_both = _median_seconds(lambda: decode.decode_all(readers, size, limits(), jpeg_device=jpeg_device), repeat)
    beside = min(decode._POOL_SIZE, decode.PILLOW_BESIDE_DEVICE)
    print(f"  decoding only: CPU path ({decode._POOL_SIZE} threads) {t_pillow:.3f} s, {jpeg_device} alone "
          f"{t_device:.3f} s, both sharing ({beside} Pillow threads) {t_both:.3f} s; CPU path ÷ shared {t_pillow / t_both:.2f}, "
          f"device alone ÷ shared {t_device / t_both:.2f}", flush=True)


def naive_listing(root: Path) -> list:
    """The folder listing as it was written first: os.walk, then pathlib per file (relative_to,
    is_symlink, lstat, and a stat again for the cache key)."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if not full.is_symlink():
                out.append((rel, full.lstat().st_size, os.stat(root / rel).st_mtime_ns))
    return out


def bench_parts(tmp: Path, root: Path, ds, repeat: int) -> None:
    """Two one-time costs of a cold load, each beside what it replaced."""
    from tlcore.data import archive, sources
    from tlcore.settings import limits

    n = len(ds)
    t_walk = _median_seconds(lambda: naive_listing(root), repeat)
    t_scan = _median_seconds(lambda: archive.folder_members(root, limits()), repeat)
    print(f"  listing {n} files: os.walk + pathlib {t_walk * 1e3:.1f} ms, one os.scandir pass "
          f"{t_scan * 1e3:.1f} ms, ratio {t_walk / t_scan:.1f}")
    record = tmp / "record.pt"
    size_mb = ds.images.numel() / 1e6
    t_torch = _median_seconds(lambda: torch.save({**sources._to_record(ds), "images": ds.images}, record), repeat)
    t_ours = _median_seconds(lambda: sources._write_entry(tmp / "entry.pt", ds), repeat)
    print(f"  writing the {size_mb:.0f} MB cache: torch.save {t_torch:.3f} s, .npy + record {t_ours:.3f} s, "
          f"ratio {t_torch / t_ours:.1f}")
    t_torch = _median_seconds(lambda: torch.load(record, weights_only=True), repeat)
    t_ours = _median_seconds(lambda: sources._read_entry(tmp / "entry.pt", False), repeat)
    print(f"  reading it back: torch.load {t_torch:.3f} s, .npy + record {t_ours:.3f} s, "
          f"ratio {t_torch / t_ours:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--widths", type=int, nargs="+", default=[1024, 2048],
                    help="widths of the generated JPEGs (4:3)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jpeg-device", default=None,
                    help="time the batch JPEG decoder on this device (default: the GPU's, when there is one)")
    ap.add_argument("--threads", type=int, nargs="*", default=[],
                    help="also time decoding with CPU pools of these sizes (e.g. 4 8 16)")
    ap.add_argument("--decoders-only", action="store_true",
                    help="only the decoding comparisons (no naive loop, cold and cached loads, or cache format)")
    args = ap.parse_args()
    from tlcore.device import jpeg_decode_device

    jpeg_device = torch.device(args.jpeg_device) if args.jpeg_device else jpeg_decode_device()
    if jpeg_device is not None:
        warm_up(jpeg_device)

    print(f"{args.images} JPEGs → {args.size}px, {os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}, JPEG decoding on {jpeg_decode_device() or 'CPU (Pillow; torchvision for small JPEGs)'}, "
          f"median of {args.repeat}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            bench_width(Path(tmp), args.images, width, args.size, args.repeat, jpeg_device, args.threads,
                        args.decoders_only)


if __name__ == "__main__":
    main()
