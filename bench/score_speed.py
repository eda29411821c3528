"""Scoring models against fine-tuning them: what the transferability scores save when choosing a model.

    python bench/score_speed.py --quick --threads 1     # one model, ~2 minutes on a 2-core CPU
    python bench/score_speed.py --threads 1             # the three offline Lite models
    python bench/score_speed.py --size 224 --per-class 200 --epochs 10   # on a GPU

Scoring side: ``tlcore.recommend.score_model`` per model (LogME, LEEP, NCE, shrinkage H-score),
from cold caches, so it includes the one forward pass over the training images (all that the
scores read; the feature cache keeps them, and a later linear probe runs only the validation
images). Fine-tuning side: what someone without scores would do to rank the same models —
fine-tune each one (``--freeze 0``: every block) for ``--epochs`` at each learning rate of a small
grid (``--lrs``; LogME's authors compare against fine-tuning with a hyper-parameter search) with
``tlcore.finetune``, keeping the best validation accuracy. Both in one process, on the same data
and device. Prints the seconds of each side per model and in total, the ratio, and how well
LogME's order matches the fine-tuned accuracies (Kendall's τ, with 3 or more models).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time

from _machine import add_machine_args, apply_machine_args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="default: the offline EfficientNet-Lite models")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.001, 0.0001])
    ap.add_argument("--freeze", type=int, default=0, help="frozen leading blocks while fine-tuning")
    ap.add_argument("--quick", action="store_true", help="one model, 5 epochs, two learning rates")
    add_machine_args(ap)
    args = ap.parse_args()
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="score-speed-")  # cold caches: nothing reused
    atexit.register(shutil.rmtree, os.environ["TLCORE_HOME"], ignore_errors=True)

    import sklearn.covariance  # noqa: F401 — imported before timing, as torch is: a one-off per process

    from tlcore import data, features, recommend, zoo
    from tlcore.device import pick_device
    from tlcore.finetune import TrialConfig, run_trial

    apply_machine_args(args)
    if args.quick:
        args.models, args.epochs, args.lrs = args.models or ["efficientnet_lite0"], 5, args.lrs[:2]
    specs = [zoo.get_spec(m) for m in args.models] if args.models else \
        [s for s in zoo.list_models() if s.family == "efficientnet_lite"]
    device = pick_device(args.device)
    ds = data.load(args.data, size=args.size, max_per_class=args.per_class)
    print(f"{ds.name}: {len(ds)} images ({len(ds.train_idx)} train), {len(ds.classes)} classes at {ds.size}px, "
          f"{device}; fine-tuning: freeze {args.freeze}, {args.epochs} epochs × lr {args.lrs}", flush=True)
    rows = []
    for spec in specs:
        model = zoo.load(spec, device=device)
        features._MEMORY.clear()  # noqa: SLF001 — the in-memory cache would hide the feature pass
        scores = recommend.score_model(spec, ds, model=model, device=device)
        started = time.perf_counter()
        accuracies = []
        for lr in args.lrs:
            cfg = TrialConfig(model=spec.key, freeze=args.freeze, epochs=args.epochs, lr=lr, backbone_lr_mult=1.0)
            accuracies.append(max(h.val_acc for h in run_trial(cfg, ds, model=model, device=device).history))
        tuned = time.perf_counter() - started
        rows.append({"model": spec.model, "score_s": scores["seconds"], "finetune_s": tuned,
                     "logme": scores["logme"], "best_acc": max(accuracies)})
        print(f"  {spec.model:20s} scored in {scores['seconds']:7.2f} s (LogME {scores['logme']:.3f}); "
              f"fine-tuned in {tuned:8.1f} s (best val acc {max(accuracies):.3f}); "
              f"ratio {tuned / scores['seconds']:.0f}×", flush=True)
    score_s, tune_s = sum(r["score_s"] for r in rows), sum(r["finetune_s"] for r in rows)
    print(f"{len(rows)} model(s): scoring {score_s:.2f} s, fine-tuning {tune_s:.1f} s, "
          f"ratio (fine-tuning / scoring) {tune_s / score_s:.0f}×")
    if len(rows) >= 3:
        agreement = recommend.rank_agreement([r["logme"] for r in rows], [r["best_acc"] for r in rows])
        print(f"LogME's order against the fine-tuned accuracies: Kendall's τ {agreement['kendall_tau']:.2f}")


if __name__ == "__main__":
    main()
