"""Measure the whole zoo (or part of it) on this machine: every batch × dtype, one process.

    python bench/zoo_sweep.py --batch 1 64 --dtype float32 bfloat16            # GPU: all 118
    python bench/zoo_sweep.py --family efficientnet_lite mobilenet_v3 --batch 1  # a CPU taste

Prints one line per measurement, then the sweep's total wall time. Results land in the
latency cache, so the Model zoo page shows them at once.
"""

from __future__ import annotations

import argparse
import time

import torch

from tlcore import bench, zoo
from tlcore.device import device_name, pick_device, supported_dtypes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--dtype", nargs="+", default=None, help="default: all the device supports")
    ap.add_argument("--family", nargs="*", default=None)
    ap.add_argument("--default-only", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    device = pick_device(args.device)
    dtypes = args.dtype or list(supported_dtypes(device))
    specs = [s for s in zoo.list_models()
             if (not args.family or s.family in args.family) and (s.is_default or not args.default_only)]
    print(f"{len(specs)} models × batch {args.batch} × {dtypes} on {device_name(device)}")
    started = time.perf_counter()
    for spec in specs:
        model = zoo.build(spec).eval()  # architecture-only timing: weights do not change speed
        for batch in args.batch:
            for dtype in dtypes:
                try:
                    r = bench.measure(spec, batch=batch, device=device, dtype=dtype, model=model, weights="random",
                                      channels_last=args.channels_last, repeats=args.repeats)
                except torch.OutOfMemoryError:
                    print(f"{spec.key:45s} b{batch:<4d} {dtype:9s} out of memory")
                    continue
                print(f"{spec.key:45s} b{batch:<4d} {dtype:9s} median {r.median_ms:9.3f} ms  "
                      f"p90 {r.p90_ms:9.3f} ms  {r.images_per_s:10.1f} img/s")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"sweep total: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
