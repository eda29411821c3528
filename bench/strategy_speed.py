"""The Strategy page's measurement, piece by piece, against the straightforward way of each piece.

    python bench/strategy_speed.py --threads 1                  # digits (1,797 images) at 64 px, Lite0
    python bench/strategy_speed.py --data textures --size 128

In one process, on the same features: LogME of every block's features by ``tlcore.transferability.logme``
against the authors' code (thuml/LogME, as tests/test_transferability.py copies it; the tests hold
them to 1e-4, the bench prints how far apart they are), and the BatchNorm input statistics by ``tlcore.features.batchnorm_statistics``
against the textbook hook that copies each BatchNorm input to float64 and sums it and its square.
Prints seconds for both sides, the ratio, and how far the results are apart. The feature pass
both share is timed once, for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _machine import add_machine_args, apply_machine_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference code lives with the tests


def float64_batchnorm_statistics(model, spec, dataset, batch: int) -> dict:
    """The baseline: every BatchNorm input copied to float64, summed with its square, per channel."""
    import torch

    from tlcore import features

    sums: dict = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            def hook(m, args, name=name):
                x = args[0].detach().double()
                dims = [0, *range(2, x.dim())]
                acc = sums.setdefault(name, [0.0, 0.0, 0])
                acc[0], acc[1], acc[2] = acc[0] + x.sum(dims), acc[1] + (x * x).sum(dims), acc[2] + x.numel() // x.shape[1]
            hooks.append(module.register_forward_pre_hook(hook))
    idx = torch.linspace(0, len(dataset) - 1, min(512, len(dataset))).round().long().unique()
    device, size = next(model.parameters()).device, features.input_size(spec, dataset)
    try:
        with torch.inference_mode():
            for start in range(0, len(idx), batch):
                model(features.normalise(dataset.images[idx[start:start + batch]].to(device), spec, size))
    finally:
        for h in hooks:
            h.remove()
    return {n: (s / c, q / c - (s / c) ** 2) for n, (s, q, c) in sums.items()}


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--size", type=int, default=64)
    add_machine_args(ap)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="strategy-speed-")
    os.environ["TLCORE_HOME"] = home  # cold caches
    try:
        run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    from tests.test_transferability import reference_logme
    from tlcore import data, features, transferability, zoo
    from tlcore.device import inference_batch, pick_device

    apply_machine_args(args)
    device = pick_device(args.device)
    spec = zoo.get_spec(args.model)
    model = zoo.load(spec, device=device).eval()
    ds = data.load(args.data, size=args.size)
    rows, y = ds.train_idx, ds.labels[ds.train_idx].numpy()
    blocks = [b.name for b in zoo.blocks_of(spec) if b.name != "head"] + [features.PENULTIMATE]
    feats, seconds = timed(lambda: features.extract_many(spec, ds, blocks, model=model, device=device))
    print(f"{ds.name}: {len(ds)} images ({len(rows)} train) at {ds.size}px, {spec.model} on {device}; "
          f"the feature pass at {len(blocks)} blocks: {seconds:.2f} s", flush=True)

    ours_total = theirs_total = 0.0
    for block in blocks:
        f = feats[block][rows].double().numpy()
        ours, ours_s = timed(lambda f=f: transferability.logme(f, y))
        theirs, theirs_s = timed(lambda f=f: reference_logme(f, y))
        ours_total, theirs_total = ours_total + ours_s, theirs_total + theirs_s
        print(f"  LogME {block:16s} {f.shape[0]}×{f.shape[1]:<5d} ours {ours_s:6.3f} s, authors' code {theirs_s:6.3f} s "
              f"({theirs_s / ours_s:4.1f}×), |difference| {abs(ours - theirs):.1e}", flush=True)
    print(f"LogME at every block: ours {ours_total:.2f} s, authors' code {theirs_total:.2f} s, "
          f"ratio {theirs_total / ours_total:.1f}×", flush=True)

    batch = inference_batch(device, ds.size)
    baseline, base_s = timed(lambda: float64_batchnorm_statistics(model, spec, ds, batch))
    ours, ours_s = timed(lambda: features.batchnorm_statistics(spec, ds, model=model, device=device))
    apart = max(max((s["mean"] - baseline[s["name"]][0].cpu()).abs().max().item(),
                    (s["var"] - baseline[s["name"]][1].cpu()).abs().max().item()) for s in ours)
    print(f"BatchNorm statistics ({len(ours)} layers, ≤ 512 images): ours {ours_s:.2f} s, float64 copy "
          f"{base_s:.2f} s, ratio {base_s / ours_s:.1f}×, largest difference {apart:.1e}")


if __name__ == "__main__":
    main()
