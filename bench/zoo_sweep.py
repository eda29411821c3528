"""Measure the whole zoo (or part of it) on this machine: every batch × dtype, one process.

    python bench/zoo_sweep.py                                          # GPU: all 118 weights
    python bench/zoo_sweep.py --family efficientnet_lite mobilenet_v3 --batch 1  # a CPU taste
    python bench/zoo_sweep.py --family resnet --batch 1 8 --compare    # against one measure() per weight

Prints one line per measurement as it has it, then the sweep's total wall time. Each
architecture × resolution is built once on the device and timed once for all the weights that
share it; a measurement stops once its timed calls reach --target-seconds (at least 5 calls,
at least 3 for calls over --max-seconds). ``--compare`` then times the same specs the way the
Model zoo page does for a single model (a copy per configuration, 20 calls each) and prints the
ratio of the two wall times and how far the medians differ. Results land in the latency cache,
so the Model zoo page shows them at once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _machine import add_machine_args, apply_machine_args

from tlcore import bench, zoo
from tlcore.device import device_name, pick_device, supported_dtypes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--dtype", nargs="+", default=None, help="default: all the device supports")
    ap.add_argument("--family", nargs="*", default=None)
    ap.add_argument("--default-only", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--repeats", type=int, default=50, help="at most this many timed calls")
    ap.add_argument("--target-seconds", type=float, default=0.1, help="timed seconds that suffice")
    ap.add_argument("--max-seconds", type=float, default=2.0, help="after this, 3 timed calls suffice")
    ap.add_argument("--compare", action="store_true", help="also time every weight with bench.measure")
    add_machine_args(ap)
    args = ap.parse_args()

    apply_machine_args(args)
    device = pick_device(args.device)
    dtypes = args.dtype or list(supported_dtypes(device))
    specs = [s for s in zoo.list_models()
             if (not args.family or s.family in args.family) and (s.is_default or not args.default_only)]
    print(f"{len(specs)} weights ({len({bench.same_compute(s) for s in specs})} architecture × resolution) "
          f"× batch {args.batch} × {dtypes} on {device_name(device)}")
    print(f"figures: eager PyTorch, inference_mode, random weights, {_clock_note(device)}; "
          f"float32 is PyTorch's default math{_tf32_note(device)}")
    started = last = time.perf_counter()
    ours, walls, timed_s = {}, [], 0.0
    for step in bench.sweep(specs, device=device, batches=args.batch, dtypes=dtypes,
                            channels_last=args.channels_last, repeats=args.repeats,
                            target_seconds=args.target_seconds, max_seconds=args.max_seconds):
        now = time.perf_counter()
        _print_step(step, now - started)
        walls.append((now - last, step))  # the first step of an architecture includes its build
        last = now
        if step.result is not None:
            ours.update({(k, step.batch, step.dtype): step.result.median_ms for k in step.keys})
            timed_s += step.result.median_ms * step.result.runs / 1e3
    sweep_s = time.perf_counter() - started
    print(f"sweep total: {sweep_s:.1f} s for {len(walls)} measurements; timed calls about {timed_s:.1f} s "
          "(median × calls), the rest warm-up, builds and dtype changes")
    for wall, step in sorted(walls, key=lambda w: -w[0])[:5]:
        print(f"  slowest: {step.keys[0]} b{step.batch} {step.dtype} {wall:.2f} s")
    if args.compare:
        _compare(specs, device, args, dtypes, ours, sweep_s)


def _print_step(step: bench.SweepStep, elapsed_s: float) -> None:
    """One line; it starts with the sweep's seconds so far (a run cut short still shows its pace)."""
    shared = f"  (also {len(step.keys) - 1} more weights)" if len(step.keys) > 1 else ""
    head = f"{elapsed_s:6.1f} s  {step.keys[0]:45s} b{step.batch:<4d} {step.dtype:9s}"
    r = step.result
    if r is None:
        print(f"{head} out of memory{shared}", flush=True)
        return
    print(f"{head} median {r.median_ms:9.3f} ms  p90 {r.p90_ms:9.3f} ms  {r.images_per_s:10.1f} img/s  "
          f"{r.runs:3d} calls{shared}", flush=True)


def _compare(specs, device, args, dtypes, ours: dict, sweep_s: float) -> None:
    """The same specs one ``bench.measure`` per weight and configuration (a random-weight build
    per call, a copy per configuration, 20 timed calls), not saved."""
    started = time.perf_counter()
    ratios = {}
    for spec in specs:
        for batch in args.batch:
            for dtype in dtypes:
                r = bench.measure(spec, batch=batch, device=device, dtype=dtype, channels_last=args.channels_last,
                                  save=False)
                if (spec.key, batch, dtype) in ours:
                    ratios[spec.key, batch, dtype] = ours[spec.key, batch, dtype] / r.median_ms
    each_s = time.perf_counter() - started
    print(f"one measure() per weight: {each_s:.1f} s; the sweep {sweep_s:.1f} s → {each_s / sweep_s:.1f}× faster")
    if ratios:
        worst = max(ratios, key=lambda k: abs(ratios[k] - 1))
        print(f"sweep median ÷ measure() median: median {statistics.median(ratios.values()):.3f}, "
              f"range {min(ratios.values()):.3f}–{max(ratios.values()):.3f} over {len(ratios)} measurements; "
              f"furthest from 1: {worst[0]} b{worst[1]} {worst[2]}")


def _clock_note(device: torch.device) -> str:
    return "CUDA events per call" if device.type == "cuda" else "wall clock per call after synchronising"


def _tf32_note(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    conv = "TF32" if torch.backends.cudnn.allow_tf32 else "float32"
    matmul = "TF32" if torch.backends.cuda.matmul.allow_tf32 else "float32"
    return f" ({conv} convolutions, {matmul} matrix products)"


if __name__ == "__main__":
    main()
