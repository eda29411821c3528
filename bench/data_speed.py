"""Decode speed: a naive per-image PIL loop vs tlcore.data (cold, then from its cache).

    python bench/data_speed.py [--images 2000] [--size 224] [--width 1024]

Writes JPEGs made from scikit-image's bundled photos into a temp folder, then in one process
times (1) the naive loop (open → convert RGB → resize → tensor, one image at a time), (2)
tlcore.data.load_folder on a cold cache (DCT-scaled JPEG decode, all cores, safety checks
included) and (3) the same call again (decoded-tensor cache). Prints images/s and ratios.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--width", type=int, default=1024, help="width of the generated JPEGs")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLCORE_HOME"] = str(Path(tmp) / "home")  # a cold cache for this run
        from tlcore import data

        root = Path(tmp) / "jpegs"
        make_jpegs(root, args.images, args.width)
        print(f"{args.images} JPEGs of {args.width}×{args.width * 3 // 4} → {args.size}px, "
              f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")

        t = time.perf_counter()
        ref = naive(root, args.size)
        t_naive = time.perf_counter() - t
        t = time.perf_counter()
        ds = data.load_folder(root, size=args.size)
        t_cold = time.perf_counter() - t
        t = time.perf_counter()
        data.load_folder(root, size=args.size)
        t_warm = time.perf_counter() - t
        assert len(ds) == len(ref) == args.images

    n = args.images
    print(f"naive PIL loop        {t_naive:8.2f} s  {n / t_naive:9.1f} images/s")
    print(f"tlcore.data (cold)    {t_cold:8.2f} s  {n / t_cold:9.1f} images/s")
    print(f"tlcore.data (cached)  {t_warm:8.2f} s  {n / t_warm:9.1f} images/s")
    print(f"ratio cold: {t_naive / t_cold:.2f}")
    print(f"ratio cached: {t_naive / t_warm:.1f}")


if __name__ == "__main__":
    main()
