"""Accuracy of the old training defaults against the new ones, trial by trial, in one run.

old: a constant learning rate L, weight decay on every parameter (tlcore before the cosine default);
cos@L: a short linear warm-up then cosine decay from the same L, no decay on norm parameters and biases;
new: the same at peak 2L, the defaults now (cosine's mean rate is half its peak; over a few epochs
     the lower mean costs accuracy, see the cos@L column).
Each row is one trial (data, model, freeze depth, optimizer, seed) with only that changed.

    python bench/schedule_accuracy.py [--seeds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from unittest import mock

from _machine import add_machine_args, apply_machine_args

CASES = (  # (dataset, size, per class, freeze, optimizer, old lr, epochs): the old defaults' rates
    ("digits", 32, 60, "all", "sgd", 0.05, 5),
    ("digits", 32, 60, 7, "sgd", 0.01, 5),
    ("digits", 32, 60, 0, "adamw", 1e-3, 5),
    ("shapes", 48, 80, "all", "sgd", 0.05, 5),
    ("shapes", 48, 80, 7, "sgd", 0.01, 5),
    ("shapes", 48, 80, 0, "adamw", 1e-3, 5),
)


def trial(cfg, ds, old: bool, device: str | None = None) -> float:
    from tlcore.finetune import optim, run_trial

    if not old:
        return run_trial(cfg, ds, device=device).val_acc  # the config's schedule: cosine by default
    # The old rule decayed every parameter: no names are exempt.
    with mock.patch.object(optim, "_undecayed", lambda model: set()):
        return run_trial(replace(cfg, schedule="constant"), ds, device=device).val_acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    from tlcore import data
    from tlcore.finetune import TrialConfig

    print("dataset   px  freeze optimizer  old lr  seed  val n   old   cos@L  new(2L)  new-old")
    deltas, same_deltas = [], []
    started = time.perf_counter()
    for name, size, per_class, freeze, opt, lr, epochs in CASES:
        for seed in range(args.seeds):
            ds = data.load(name, size=size, max_per_class=per_class, seed=seed)
            cfg = TrialConfig(model="efficientnet_lite0", freeze=freeze, optimizer=opt, lr=lr, epochs=epochs,
                              seed=seed, augment=("flip",))
            old, same = trial(cfg, ds, True, args.device), trial(cfg, ds, False, args.device)
            new = trial(replace(cfg, lr=2 * lr), ds, False, args.device)
            deltas.append(new - old)
            same_deltas.append(same - old)
            print(f"{name:9s} {size:3d}  {freeze!s:6s} {opt:9s} {lr:<7g} {seed:4d}  {len(ds.val_idx):5d}  {old:.3f}  "
                  f"{same:.3f}  {new:.3f}   {new - old:+.3f}", flush=True)
    print(f"{len(deltas)} trials in {time.perf_counter() - started:.0f} s. new − old: mean {statistics.mean(deltas):+.3f}, "
          f"median {statistics.median(deltas):+.3f}, new ≥ old in {sum(d >= 0 for d in deltas)} of {len(deltas)}; "
          f"cos@L − old: mean {statistics.mean(same_deltas):+.3f}")


if __name__ == "__main__":
    main()
