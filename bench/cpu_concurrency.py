"""Two heavy passes at once on a CPU, as on a shared server: a trial in the job worker while a
page's script thread runs the Strategy page's BatchNorm pass (float32, up to 512 images).

    python bench/cpu_concurrency.py                 # textures, 400 images at 64 px, Lite0, fine-tune all

Each runs alone, then both at once in two threads (each torch call then asks for every core).
Prints the seconds and together ÷ one after the other: near 1.0 means sharing the cores costs
nothing beyond the time the other work takes, so no lock is needed to take turns; well above 1
would mean the threads' pools fight over the cores (oversubscription).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from _machine import add_machine_args, apply_machine_args


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def together(works: dict[str, Callable[[], object]]) -> tuple[float, dict[str, float]]:
    """Wall seconds for all of ``works`` started at once in threads, and each one's seconds."""
    each: dict[str, float] = {}

    def run(name: str) -> None:
        each[name] = timed(works[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in works]
    wall = timed(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
    return wall, each


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="textures")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--freeze", default="0", help="the trial's frozen blocks, or 'all'")
    ap.add_argument("--repeats", type=int, default=2)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    os.environ.setdefault("TLCORE_HOME", tempfile.mkdtemp(prefix="tlcore-bench-"))
    import torch

    from tlcore import data, features, zoo
    from tlcore.finetune import TrialConfig, run_trial

    ds = data.load(args.data, size=args.size, max_per_class=args.per_class)
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    cfg = TrialConfig(model=spec.key, freeze="all" if args.freeze == "all" else int(args.freeze), epochs=args.epochs)

    def trial() -> None:
        run_trial(cfg, ds, model=model)

    def batchnorm_pass() -> None:
        features._MEMORY.clear()  # the page's pass, not its in-memory result
        features.batchnorm_statistics(spec, ds, model=model)

    trial(), batchnorm_pass()  # warm-up: oneDNN primitives, the decoded data
    print(f"{len(ds)} {args.data} images at {args.size} px, trial with {args.freeze} frozen blocks, {args.epochs} "
          f"epochs; {torch.get_num_threads()} torch threads")
    for _ in range(args.repeats):
        a, b = timed(trial), timed(batchnorm_pass)
        wall, each = together({"trial": trial, "BN pass": batchnorm_pass})
        print(f"  alone: trial {a:.2f} s, BN pass {b:.2f} s, one after the other {a + b:.2f} s | together: "
              f"{wall:.2f} s (trial {each['trial']:.2f}, BN pass {each['BN pass']:.2f}) | together ÷ one after "
              f"the other: {wall / (a + b):.2f}")


if __name__ == "__main__":
    sys.exit(main())
