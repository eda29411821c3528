"""Fine-tuning speed: the PyTorch tutorial loop vs tlcore.finetune, same model, data, freeze, epochs.

    python bench/finetune_speed.py --quick                 # ~2 minutes on a 2-core CPU
    python bench/finetune_speed.py --images 2000 --freeze last   # the GPU comparison

The naive side is the "Transfer Learning for Computer Vision" tutorial: ImageFolder + DataLoader
with per-image PIL transforms (RandomResizedCrop + flip for training; Resize + CenterCrop for
validation), batch 4, fp32, the full forward every step, SGD(lr=1e-3, momentum 0.9). Ours
decodes the same JPEG folder once (tlcore.data) and trains with tlcore.finetune. Both use the
offline pretrained EfficientNet-Lite0 (the tutorial's ResNet-18 weights need a download); ours
uses the app's automatic batch unless --batch is given (32 on a CPU; on a GPU up to 256 while every
epoch keeps 20 updates, the rates scaled with it: 64 for the 1,600 training images of --images 2000).
Prints both times, both accuracies, the batch ours ran with, the time to the first epoch and the ratio.
tlcore makes its own seeded split of the same files (the tutorial reads train/ and val/ folders),
so the validation sets differ but are the same size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import datasets, transforms


def write_folder(root: Path, n_per_class: int, size: int) -> None:
    from tlcore import data

    ds = data.load("shapes", size=size, max_per_class=n_per_class)
    val = set(ds.val_idx.tolist())
    for i in range(len(ds)):
        split = "val" if i in val else "train"
        folder = root / split / ds.classes[int(ds.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.jpg", quality=92)


def tutorial(root: Path, freeze: str, epochs: int, device: torch.device) -> tuple[float, float, float]:
    """(seconds, final validation accuracy, seconds to the end of the first epoch)."""
    from tlcore import zoo

    spec = zoo.get_spec("efficientnet_lite0")
    norm = transforms.Normalize(spec.mean, spec.std)
    tf = {"train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), norm]),
          "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                     norm])}
    sets = {s: datasets.ImageFolder(root / s, tf[s]) for s in ("train", "val")}
    loaders = {s: torch.utils.data.DataLoader(sets[s], batch_size=4, shuffle=s == "train", num_workers=2)
               for s in sets}
    model = zoo.load(spec)
    model._fc = nn.Linear(model._fc.in_features, len(sets["train"].classes))
    if freeze == "all":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("_fc.")
    elif freeze == "last":
        trainable = ("_blocks.15.", "_conv_head.", "_bn1.", "_fc.")
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(trainable)
    model = model.to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    acc, first = 0.0, None
    for _ in range(epochs):
        model.train()
        for x, y in loaders["train"]:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        acc = correct / len(sets["val"])
        first = first or time.perf_counter() - started
    return time.perf_counter() - started, acc, first


def ours(root: Path, freeze: str, epochs: int, device: torch.device, batch: int | None) -> tuple[float, float, dict]:
    from dataclasses import asdict

    from tlcore import data, zoo
    from tlcore.finetune import TrialConfig, run_trial

    spec = zoo.get_spec("efficientnet_lite0")
    depth = "all" if freeze == "all" else (len(zoo.blocks_of(spec)) - 2 if freeze == "last" else 0)
    started = time.perf_counter()
    ds = data.load_folder(root, size=224)
    loaded_s = time.perf_counter() - started
    cfg = TrialConfig(model=spec.key, freeze=depth, epochs=epochs, batch_size=batch, augment=("flip", "crop"))
    result = run_trial(cfg, ds, device=device)
    seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    data.sources.finish_writes()  # a large decoded cache is written while the trial runs
    return seconds, result.val_acc, {"load_folder_s": loaded_s, **asdict(result.timings),
                                      "cache_written_after_s": time.perf_counter() - t0}


def fresh_caches(home: Path) -> None:
    """A new data directory and empty in-process caches: the next run is of a trial on new data."""
    from tlcore import features
    from tlcore.finetune.prefix_cache import RECENT

    os.environ["TLCORE_HOME"] = str(home)
    features._MEMORY.clear()
    RECENT.clear()


def ours_again(root: Path, args: argparse.Namespace, device: torch.device, home: Path) -> None:
    """Ours once more in this process, caches fresh: what the first run paid beyond this is the
    process's one-time start (kernels loaded, plans made for each new shape), not the trial's work."""
    fresh_caches(home)
    seconds, _, timings = ours(root, args.freeze, args.epochs, device, args.batch)
    print(f"ours again in this process, fresh caches: {seconds:.2f} s (" + ", ".join(
        f"{k} {v:.2f}" for k, v in timings.items() if isinstance(v, float)) + ")")


def profile_ours(root: Path, args: argparse.Namespace, device: torch.device, home: Path) -> None:
    import cProfile
    import pstats

    fresh_caches(home)
    profiler = cProfile.Profile()
    profiler.runcall(ours, root, args.freeze, args.epochs, device, args.batch)
    print("ours again under cProfile (fresh caches, warm process), by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="80 images per class, 5 epochs (the tutorial runs 25)")
    ap.add_argument("--images", type=int, default=2000, help="total images (4 classes)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--freeze", choices=["all", "last", "none"], default="all",
                    help="all: only the head trains; last: the last block and head; none: everything")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=None,
                    help="tlcore's batch size (default: automatic, as in the app; the tutorial's is 4)")
    ap.add_argument("--again", action="store_true",
                    help="then run ours again (fresh caches, warm process): the first run's one-time costs")
    ap.add_argument("--profile", action="store_true",
                    help="then run ours again (fresh caches, warm process) under cProfile and print where it went")
    args = ap.parse_args()
    if args.quick:
        args.images, args.epochs = 320, 5
    from tlcore.device import pick_device

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLCORE_HOME"] = str(Path(tmp) / "home")  # cold caches: ours pays its decoding
        root = Path(tmp) / "shapes"
        write_folder(root, args.images // 4, 224)
        print(f"{args.images} JPEGs (4 classes, 224 px), freeze {args.freeze}, {args.epochs} epochs, "
              f"{device.type}, efficientnet_lite0")
        t_naive, acc_naive, first_naive = tutorial(root, args.freeze, args.epochs, device)
        t_ours, acc_ours, timings = ours(root, args.freeze, args.epochs, device, args.batch)
        if args.again:
            ours_again(root, args, device, Path(tmp) / "home-again")
        if args.profile:
            profile_ours(root, args, device, Path(tmp) / "home-profiled")
    print(f"tutorial loop   {t_naive:8.2f} s  val acc {acc_naive:.3f}")
    print(f"tlcore.finetune {t_ours:8.2f} s  val acc {acc_ours:.3f}  (timings: "
          + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items()
                      if k != "per_epoch_s" and v is not None) + ")")
    print("  epochs (s): " + " ".join(f"{s:.3f}" for s in timings["per_epoch_s"]))
    print(f"to the first epoch's point: tutorial {first_naive:.2f} s, tlcore {timings['first_epoch_s']:.2f} s "
          "(ours: from the trial's start, the dataset already decoded — as after pressing Run)")
    print(f"ratio: {t_naive / t_ours:.2f}")


if __name__ == "__main__":
    main()
