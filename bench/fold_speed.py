"""BatchNorm folding (tlcore.fold) where a pass runs in float32: a feature pass and a float32 trial
with a cached frozen prefix, each against the same code on the model as it is.

    python bench/fold_speed.py --threads 2                      # Lite0, textures at 128 px (~3 min, 2-core VM)
    python bench/fold_speed.py --models efficientnet_lite0 mobilenet_v3_large resnet18 --size 224

Float32 is what a CPU without AMX computes everything in (``tlcore.device.mixed_dtype``), and what a
trial set to float32 runs on any device; in bf16 nothing is folded (see ``tlcore.fold.folded``).
Renders and dreams have their own comparison: ``bench/vis_speed.py --fold``.

Feature side: ``features.extract_many`` of every image at the penultimate layer and a middle block,
``mixed=False``, the feature caches emptied before each pass (a pass on new data: the recommender's,
a probe's, the gallery's). Trial side: ``run_trial`` with the last block and head trainable
(finetune_speed's ``--freeze last``), float32, a few epochs, the prefix store emptied first, so its
time includes the prefix pass a trial on new data makes. Each side runs the model as it is and
folded, alternating, ``--repeat`` times after one warm-up of each; medians. The models' timing does
not depend on their weights: torchvision's come with random weights (no download), Lite's are the
pretrained ones. Prints seconds, the ratio (as it is / folded) and how far results are apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import add_machine_args, apply_machine_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def as_it_is(model, keep=(), dtype=None):
    return model


def feature_side(spec, model, ds, repeat: int) -> None:
    from tlcore import features, paths

    blocks = [features.PENULTIMATE, zoo_middle(spec)]

    def once() -> tuple[float, dict]:
        features._MEMORY.clear()  # noqa: SLF001
        shutil.rmtree(paths.folder("features"), ignore_errors=True)
        started = time.perf_counter()
        out = features.extract_many(spec, ds, blocks, model=model, mixed=False)
        return time.perf_counter() - started, out

    seconds, outs = alternate(features, once, repeat)
    far = max(float((outs["as it is"][b] - outs["folded"][b]).norm() / outs["as it is"][b].norm()) for b in blocks)
    report(f"features  {spec.model:22s} {len(ds):5d} images", seconds, f"relative difference {far:.1e}")


def trial_side(spec, model, ds, epochs: int, repeat: int) -> None:
    from tlcore import zoo
    from tlcore.finetune import TrialConfig, prefix_cache, run_trial, trial

    cfg = TrialConfig(model=spec.key, freeze=len(zoo.blocks_of(spec)) - 2, epochs=epochs, precision="float32")

    def once() -> tuple[float, object]:
        prefix_cache.RECENT.clear()
        started = time.perf_counter()
        result = run_trial(cfg, ds, model=model)
        return time.perf_counter() - started, result

    seconds, outs = alternate(trial, once, repeat)
    accs = " / ".join(f"{outs[w].val_acc:.4f}" for w in outs)
    report(f"trial     {spec.model:22s} {epochs} epochs", seconds, f"val acc (as it is / folded) {accs}")


def zoo_middle(spec) -> str:
    from tlcore import zoo

    blocks = zoo.blocks_of(spec)
    return blocks[len(blocks) // 2].name


def alternate(module, once, repeat: int) -> tuple[dict[str, float], dict]:
    """``once()`` with ``module.folded`` (its import of tlcore.fold.folded) as it is and replaced by
    ``as_it_is``: both once to warm up, then ``repeat`` rounds, alternating; median seconds and the
    last outputs per way. ``once`` returns (seconds, output)."""
    folding = module.folded
    ways = {"as it is": as_it_is, "folded": folding}
    times: dict[str, list[float]] = {w: [] for w in ways}
    outs = {}
    try:
        for fold in ways.values():
            module.folded = fold
            once()
        for _ in range(repeat):
            for name, fold in ways.items():
                module.folded = fold
                seconds, outs[name] = once()
                times[name].append(seconds)
    finally:
        module.folded = folding
    return {w: statistics.median(t) for w, t in times.items()}, outs


def report(what: str, seconds: dict[str, float], extra: str) -> None:
    print(f"{what}: as it is {seconds['as it is']:.2f} s, folded {seconds['folded']:.2f} s, "
          f"ratio {seconds['as it is'] / seconds['folded']:.2f}×; {extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--data", default="textures", help="a built-in dataset")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--per-class", type=int, default=None, help="images per class (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="fold-speed-")  # caches of its own, removed at the end
    from tlcore import data, zoo
    from tlcore.device import device_name, pick_device

    dev = pick_device(args.device)
    print(f"{device_name(dev)}; torch threads {torch.get_num_threads()}; float32 throughout", flush=True)
    try:
        ds = data.load(args.data, size=args.size, max_per_class=args.per_class)
        print(f"{args.data}: {len(ds)} images at {args.size} px, {len(ds.classes)} classes", flush=True)
        for name in args.models:
            spec = zoo.get_spec(name)
            model = zoo.load(spec, device=dev, pretrained=spec.family == "efficientnet_lite").eval()
            feature_side(spec, model, ds, args.repeat)
            trial_side(spec, model, ds, args.epochs, args.repeat)
    finally:
        shutil.rmtree(os.environ["TLCORE_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
