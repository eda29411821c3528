"""Check `tlcore bench` against torch.utils.benchmark on the same model, input and thread count.

    python bench/latency_vs_torch_benchmark.py [--model resnet18] [--batch 1] [--device cpu]

Prints both medians and their ratio (the issue's bar: within x1.5).
"""

from __future__ import annotations

import argparse

import torch
import torch.utils.benchmark as tb

from tlcore import bench, zoo
from tlcore.device import pick_device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    spec = zoo.get_spec(args.model)
    device = pick_device(args.device)
    ours = bench.measure(spec, batch=args.batch, device=device, save=False)

    model = zoo.build(spec).eval().to(device)
    x = torch.randn(args.batch, 3, spec.crop_size, spec.crop_size, device=device)
    with torch.inference_mode():
        timer = tb.Timer("model(x)", globals={"model": model, "x": x},
                         num_threads=torch.get_num_threads())
        ref = timer.blocked_autorange(min_run_time=2.0)
    ref_ms = ref.median * 1e3
    print(f"model {spec.key}  device {ours.device_name}  batch {args.batch}")
    print(f"tlcore.bench           median {ours.median_ms:.3f} ms  p90 {ours.p90_ms:.3f} ms  ({ours.runs} runs)")
    print(f"torch.utils.benchmark  median {ref_ms:.3f} ms  ({ref.number_per_run} per block, {len(ref.times)} blocks)")
    print(f"ratio: {ours.median_ms / ref_ms:.3f}")


if __name__ == "__main__":
    main()
