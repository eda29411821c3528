"""A linear probe's accuracy on raw pooled features against standardised ones, per block, in one run.

raw: the head trained on the block's pooled activations as they come (tlcore before standardising);
std: the same trial on features standardised with the training images' mean and spread (the default now);
LR: scikit-learn's logistic regression trained to convergence on the same standardised features, the
    ceiling a probe of a few epochs can approach.
Every trial is the lab's default probe (5 epochs, SGD, cosine, automatic batch); only the features'
scaling changes, so the columns differ by that alone.

    python bench/probe_accuracy.py [--seeds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
from _machine import add_machine_args, apply_machine_args

CASES = (("digits", 64, 20), ("digits", 64, 100), ("shapes", 64, 100))  # (dataset, px, per class)
DEEPEST = 6  # the last blocks before the head, and the penultimate features


def probe(cfg, ds, raw: bool, device: str | None) -> float:
    from tlcore.finetune import run_trial, trial

    if not raw:
        return run_trial(cfg, ds, device=device).val_acc
    def unscaled(feats, train_idx):
        return torch.zeros(feats.shape[1], device=feats.device), torch.ones(feats.shape[1], device=feats.device)
    with mock.patch.object(trial, "_train_moments", unscaled):
        return run_trial(cfg, ds, device=device).val_acc


def converged(spec, ds, block: str) -> float:
    from sklearn.linear_model import LogisticRegression

    from tlcore import features
    from tlcore.finetune import trial

    feats = features.extract(spec, ds, block=block)
    mean, std = trial._train_moments(feats, ds.train_idx)
    z = ((feats - mean) / std).numpy()
    labels = ds.labels.numpy()
    fit = LogisticRegression(max_iter=5000).fit(z[ds.train_idx.numpy()], labels[ds.train_idx.numpy()])
    return fit.score(z[ds.val_idx.numpy()], labels[ds.val_idx.numpy()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    from tlcore import data, features, zoo
    from tlcore.finetune import TrialConfig

    spec = zoo.get_spec("efficientnet_lite0")
    blocks = [b.name for b in zoo.blocks_of(spec) if b.name != "head"][-DEEPEST + 1:] + [features.PENULTIMATE]
    print("dataset  px  per class  block            dims  val n   raw    std    LR     std-raw")
    gains, gaps, started = [], [], time.perf_counter()
    for name, size, per_class in CASES:
        ds = data.load(name, size=size, max_per_class=per_class)
        for block in blocks:
            raw = statistics.mean(probe(TrialConfig(model=spec.key, probe_block=block, seed=s), ds, True, args.device)
                                  for s in range(args.seeds))
            std = statistics.mean(probe(TrialConfig(model=spec.key, probe_block=block, seed=s), ds, False, args.device)
                                  for s in range(args.seeds))
            ceiling = converged(spec, ds, block)
            dims = features.extract(spec, ds, block=block).shape[1]
            gains.append(std - raw)
            gaps.append(ceiling - std)
            print(f"{name:8s} {size:3d}  {per_class:9d}  {block:15s} {dims:5d}  {len(ds.val_idx):5d}  {raw:.3f}  "
                  f"{std:.3f}  {ceiling:.3f}  {std - raw:+.3f}", flush=True)
    print(f"{len(gains)} blocks × {args.seeds} seeds in {time.perf_counter() - started:.0f} s. std − raw: mean "
          f"{statistics.mean(gains):+.3f}, worst {min(gains):+.3f}, std ≥ raw in {sum(g >= 0 for g in gains)} of "
          f"{len(gains)}; LR − std: mean {statistics.mean(gaps):+.3f}, largest {max(gaps):+.3f}")


if __name__ == "__main__":
    main()
