"""Accuracy and time against the number of augmented views a cached frozen prefix keeps.

A trial whose frozen prefix is cached computes it once per augmented view (view 0 plain, the others
augmented; ``prefix_cache.views``). On a CPU each view is a whole prefix pass — at 224 px about as
long as four epochs of the trained tail — so the views, not the epochs, decide what a trial costs
there. Each row trains one setting (data, augmentation, epochs, seed) with 1, 2 and 4 views (what
the rule gives is marked *) and prints validation accuracy and seconds for each: fewer views may
only become the rule where they keep the accuracy.

    python bench/view_accuracy.py [--seeds 3] [--threads 2] [--only NAME]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import tempfile
import time

from _machine import add_machine_args, apply_machine_args

CASES = (  # (dataset, px, per class, augmentation, epochs): the last block and the head train
    ("shapes", 224, 80, ("flip", "crop"), 5),  # bench/finetune_speed.py --quick's data and recipe
    ("shapes", 224, 80, ("flip",), 5),  # the app's default augmentation
    ("textures", 128, None, ("flip", "crop"), 5),
    ("faces", 96, None, ("flip", "crop"), 5),
    ("digits", 64, 60, ("flip", "crop"), 10),
    ("digits", 96, 30, ("flip", "crop"), 5),
)
VIEWS = (1, 2, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", default=None, help="only the cases on this dataset (NAME or NAME@PX)")
    add_machine_args(ap)
    args = ap.parse_args()
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="view-accuracy-")
    atexit.register(shutil.rmtree, os.environ["TLCORE_HOME"], ignore_errors=True)
    apply_machine_args(args)
    import torch

    from tlcore import data, zoo
    from tlcore.device import pick_device
    from tlcore.finetune import TrialConfig, prefix_cache, run_trial

    device = pick_device(args.device)
    rule = prefix_cache.views
    n_blocks = len(zoo.blocks_of(zoo.get_spec("efficientnet_lite0")))
    print(f"{device.type}, {torch.get_num_threads()} threads; efficientnet_lite0, last block + head trained")
    print("dataset   px  train aug        ep seed  " + "  ".join(f"{v} view{'s' if v > 1 else ' '}       "
                                                          for v in VIEWS))
    # Warm the process first (kernels, plans, folded copies), so the first row's times compare.
    run_trial(TrialConfig(model="efficientnet_lite0", freeze=n_blocks - 2, epochs=1),
              data.load("digits", size=64, max_per_class=5), device=device)
    diffs: dict[int, list[float]] = {v: [] for v in VIEWS}  # crop trials: where the rule differs by device
    for name, size, cap, aug, epochs in CASES:
        if args.only not in (None, name, f"{name}@{size}"):
            continue
        for seed in range(args.seeds):
            ds = data.load(name, size=size, max_per_class=cap, seed=seed)
            cfg = TrialConfig(model="efficientnet_lite0", freeze=n_blocks - 2, epochs=epochs, seed=seed,
                              augment=aug)
            ruled = rule(cfg, device)
            cells, accs = [], {}
            for v in VIEWS:
                prefix_cache.RECENT.clear()  # every trial computes its own views
                prefix_cache.views = lambda _cfg, _dev, v=v: v
                started = time.perf_counter()
                try:
                    accs[v] = run_trial(cfg, ds, device=device).val_acc
                finally:
                    prefix_cache.views = rule
                mark = "*" if v == ruled else " "
                cells.append(f"{accs[v]:.3f} {time.perf_counter() - started:6.1f} s{mark}  ")
            for v, acc in accs.items():
                if "crop" in aug:
                    diffs[v].append(acc - accs[VIEWS[-1]])
            print(f"{name:9s} {size:3d}  {len(ds.train_idx):5d} {'+'.join(aug):10s} {epochs:2d} {seed:4d}  "
                  + "".join(cells), flush=True)
    for v, d in diffs.items():
        if d and v != VIEWS[-1]:
            print(f"{v} view{'s' if v > 1 else ''} − {VIEWS[-1]} views, trials with crops: mean "
                  f"{statistics.mean(d):+.3f}, from {min(d):+.3f} to {max(d):+.3f} over {len(d)} trials")


if __name__ == "__main__":
    main()
