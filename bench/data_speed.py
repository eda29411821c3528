"""Decode speed: a naive per-image PIL loop vs tlcore.data (cold, then from its cache).

    python bench/data_speed.py [--images 300] [--size 224] [--widths 1024 2048] [--repeat 3]

For each source width, writes JPEGs made from scikit-image's bundled photos into a temp folder,
then in one process times (1) the naive loop (open → convert RGB → resize → tensor, one image at
a time), (2) tlcore.data.load_folder on a cold cache (header checks, DCT-scaled JPEG decode on all
cores — or batched nvJPEG on a GPU —, fingerprint, writing the cache) and (3) the same call again
(decoded-tensor cache). Each is the median of --repeat runs (a fresh cache folder per cold run).
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


def make_jpegs(root: Path, n: int, width: int) -> None:
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
              skimage.data.rocket(), skimage.data.hubble_deep_field()]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = Image.fromarray(photos[i % len(photos)])
        img = src.resize((width, width * 3 // 4), Image.Resampling.BILINEAR)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (width * 3 // 4, width, 3))
        folder = root / f"class{i % len(photos)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


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


def bench_width(tmp: Path, n: int, width: int, size: int, repeat: int) -> tuple[float, float, float]:
    from tlcore import data

    root = tmp / f"jpegs{width}"
    make_jpegs(root, n, width)
    runs = iter(range(10**6))

    def cold():
        os.environ["TLCORE_HOME"] = str(tmp / f"home{width}-{next(runs)}")  # an empty cache each time
        assert len(data.load_folder(root, size=size)) == n

    t_naive = _median_seconds(lambda: naive(root, size), repeat)
    t_cold = _median_seconds(cold, repeat)
    t_warm = _median_seconds(lambda: data.load_folder(root, size=size), repeat)
    return t_naive, t_cold, t_warm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--widths", type=int, nargs="+", default=[1024, 2048],
                    help="widths of the generated JPEGs (4:3)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from tlcore.device import jpeg_decode_device

    print(f"{args.images} JPEGs → {args.size}px, {os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}, JPEG decoding on {jpeg_decode_device() or 'CPU (Pillow)'}, "
          f"median of {args.repeat}")
    n = args.images
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            t_naive, t_cold, t_warm = bench_width(Path(tmp), n, width, args.size, args.repeat)
            print(f"\nsources {width}×{width * 3 // 4}")
            print(f"  naive PIL loop        {t_naive:8.2f} s  {n / t_naive:9.1f} images/s")
            print(f"  tlcore.data (cold)    {t_cold:8.2f} s  {n / t_cold:9.1f} images/s")
            print(f"  tlcore.data (cached)  {t_warm:8.2f} s  {n / t_warm:9.1f} images/s")
            print(f"  ratio cold: {t_naive / t_cold:.2f}")
            print(f"  ratio cached: {t_naive / t_warm:.1f}")


if __name__ == "__main__":
    main()
