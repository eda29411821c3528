"""Accuracy against batch size on small datasets: what the automatic batch may grow to.

Each row is one trial setting (data, freeze, optimizer, seed) trained at batch 32 and at 64, 128
and 256,
each with the same rates ("same") and with the rates scaled linearly with the batch ("×b/32",
what ``TrialConfig.for_run`` does for an automatic batch, Goyal et al. 2017). The last column is
the batch ``auto_batch`` picks for that many training images on a GPU. The rule lets the batch
reach 128 and 256 only from 2,560 and 5,120 training images, so the large cases (shapes, 6,400
images) are the ones that test it there; the small ones, where it picks 32 or 64, test 64.
Accuracies only: the time a batch saves is the GPU's business (bench/finetune_speed.py there).

    python bench/batch_accuracy.py [--seeds 2] [--threads 2] [--only large|small]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import tempfile
from dataclasses import replace

from _machine import add_machine_args, apply_machine_args

CASES = (  # (dataset, size, per class, freeze, optimizer): "last" = all blocks but the last frozen
    ("digits", 32, None, "all", "sgd"),
    ("shapes", 48, 200, "all", "sgd"),
    ("textures", 64, None, "all", "sgd"),
    ("digits", 32, None, "last", "sgd"),
    ("shapes", 48, 200, "last", "sgd"),
    ("digits", 32, None, "all", "adamw"),
)
LARGE = (  # 5,120 training images: where the automatic batch may reach 256
    ("shapes", 32, 1600, "all", "sgd"),
    ("shapes", 32, 1600, "all", "adamw"),
    ("shapes", 32, 1600, "last", "sgd"),
    ("shapes", 32, 1600, "last", "adamw"),
)
BATCHES = (64, 128, 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--only", choices=("small", "large"), default=None, help="one group of cases")
    add_machine_args(ap)
    args = ap.parse_args()
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="batch-accuracy-")
    atexit.register(shutil.rmtree, os.environ["TLCORE_HOME"], ignore_errors=True)
    apply_machine_args(args)
    import torch

    from tlcore import data, zoo
    from tlcore.finetune import DEFAULT_BATCH, TrialConfig, auto_batch, run_trial

    n_blocks = len(zoo.blocks_of(zoo.get_spec("efficientnet_lite0")))
    head = " ".join(f"{b:>4d} same {b:>4d} ×b/32" for b in BATCHES)
    print(f"dataset   px  train freeze opt   seed    {DEFAULT_BATCH:>3d}  {head}   auto on a GPU", flush=True)
    groups = {"small": CASES, "large": LARGE}
    losses = {(g, b, s): [] for g in groups for b in BATCHES for s in ("same", "scaled")}
    cases = [(g, case) for g in groups if args.only in (None, g) for case in groups[g]]
    for group, (name, size, cap, freeze, opt) in cases:
        for seed in range(args.seeds):
            ds = data.load(name, size=size, max_per_class=cap, seed=seed)
            depth = "all" if freeze == "all" else n_blocks - 2
            base = TrialConfig(model="efficientnet_lite0", freeze=depth, epochs=args.epochs, seed=seed,
                               batch_size=DEFAULT_BATCH, optimizer=opt)
            ref = run_trial(base, ds, device=args.device).val_acc
            cells = []
            for b in BATCHES:
                for scale, lr in (("same", base.lr), ("scaled", base.lr * b / DEFAULT_BATCH)):
                    acc = run_trial(replace(base, batch_size=b, lr=lr), ds, device=args.device).val_acc
                    losses[group, b, scale].append(acc - ref)
                    cells.append(f"{acc:9.3f}")
            auto = auto_batch(len(ds.train_idx), torch.device("cuda"))
            print(f"{name:9s} {size:3d}  {len(ds.train_idx):5d} {freeze:6s} {opt:5s} {seed:4d}  {ref:.3f}  "
                  f"{' '.join(cells)}"
                  f"   {auto}", flush=True)
    for (group, b, scale), diffs in losses.items():
        if diffs and scale == "same":
            scaled = losses[group, b, "scaled"]
            print(f"{group} cases, batch {b:3d} − batch {DEFAULT_BATCH}: same rates mean "
                  f"{statistics.mean(diffs):+.3f}, scaled rates mean {statistics.mean(scaled):+.3f} "
                  f"(worst {min(scaled):+.3f})")


if __name__ == "__main__":
    main()
