"""What a new input shape costs the first time it meets the model, on this device.

    python bench/first_call.py --device cuda                                 # ~30 s on a GPU
    python bench/first_call.py --device cuda --env CUDA_MODULE_LOADING=EAGER  # also in a child process with it
    python bench/first_call.py --threads 2 --size 128                          # a CPU check

A trial meets several batch shapes (the frozen prefix's inference batches and their remainder, the
tail's training batch, its validation remainder, one-image checks), and a cold trial pays the
device's set-up for each the first time: cuDNN's execution plans and lazily loaded kernels on a
GPU, oneDNN's generated kernels on a CPU. A warm-up in a bench hides this; a user pressing Run
does not. For each part of a trial (the frozen prefix in inference, a training step of the tail)
this times, in one process on pretrained weights, each batch size in turn: its first call and the
median of its next --repeat calls, the clock read after synchronising. The difference is what that
shape's first appearance cost. Then the same shapes again on a new thread: cuDNN keeps its plans
per thread, and the app runs each trial on a thread of its own (tlcore.jobs). ``--env``: the same run again in a child process with those
environment variables set (they must be set before the device starts), printed after this one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from _machine import add_machine_args, apply_machine_args


def wall_ms(work, device: torch.device) -> float:
    """Milliseconds of ``work()`` on the wall clock, the device synchronised before and after:
    a first call's cost is host work (plans, kernel loading) as much as device time."""
    from tlcore.device import synchronize

    synchronize(device)
    t0 = time.perf_counter()
    work()
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def first_and_warm(work, device: torch.device, repeat: int) -> tuple[float, float]:
    first = wall_ms(work, device)
    return first, statistics.median(wall_ms(work, device) for _ in range(repeat))


def parts(model_key: str, size: int, device: torch.device):
    """(name, run(batch)) for the frozen prefix in inference and a training step of the tail,
    cut where the lab's "freeze all but the last block" cuts, in the device's mixed precision."""
    from tlcore import features, zoo
    from tlcore.device import autocast, mixed_dtype, training_autocast
    from tlcore.zoo.split import split

    spec = zoo.get_spec(model_key)
    model = zoo.load(spec, device=device)
    blocks = zoo.blocks_of(spec)
    prefix, tail = split(model, blocks, len(blocks) - 2, architecture=spec.architecture)
    images = torch.randint(0, 256, (512, 3, size, size), dtype=torch.uint8, device=device)
    with torch.inference_mode(), autocast(device):
        acts = prefix.eval()(features.normalise(images[:1], spec, size))
    acts = acts.expand(512, *acts.shape[1:]).clone()  # the tail's input, any batch size
    labels = torch.randint(0, spec.num_classes, (512,), device=device)
    opt = torch.optim.SGD(tail.parameters(), lr=1e-3, momentum=0.9)

    def infer(batch: int) -> None:
        with torch.inference_mode(), autocast(device):
            prefix(features.normalise(images[:batch], spec, size))

    def train_step(batch: int) -> None:
        tail.train()
        with training_autocast(device, mixed_dtype(device)):
            loss = torch.nn.functional.cross_entropy(tail(acts[:batch]).float(), labels[:batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return [("prefix inference", infer), ("tail training step", train_step)]


def run(args: argparse.Namespace) -> None:
    from tlcore.device import device_name, mixed_dtype, pick_device

    device = pick_device(args.device)
    t0 = time.perf_counter()
    named = parts(args.model, args.size, device)
    print(f"{args.model} at {args.size} px on {device_name(device)}, autocast {mixed_dtype(device) or 'none'}, "
          f"warm median of {args.repeat}; model load and split {time.perf_counter() - t0:.2f} s", flush=True)
    for name, work in named:
        extra = shape_costs(name, work, device, args)
        later = extra[1:]
        if later:
            print(f"  {name}: a new shape after the first costs {statistics.median(later):.1f} ms more than "
                  "a warm call (median)", flush=True)
        again = on_a_new_thread(lambda name=name, work=work: shape_costs(f"{name} (new thread)", work, device, args))
        print(f"  {name}: on a new thread, the same shapes cost {sum(again):.1f} ms more than warm calls "
              f"in all (on the first thread {sum(extra):.1f} ms)", flush=True)


def on_a_new_thread(work):
    """``work()``'s result, run on a thread started for it (as tlcore.jobs runs a trial)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def shape_costs(name: str, work, device: torch.device, args: argparse.Namespace) -> list[float]:
    """Each batch size's first call minus its warm median (ms), printed as it goes."""
    extra = []
    for batch in args.batch:
        first, warm = first_and_warm(lambda b=batch: work(b), device, args.repeat)
        extra.append(first - warm)
        print(f"  {name:32s} batch {batch:4d}  first {first:9.1f} ms  warm {warm:8.1f} ms  "
              f"first - warm {first - warm:8.1f} ms", flush=True)
    return extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 208, 64, 16, 1],
                    help="batch sizes in the order a trial meets them (default: a 2,000-image trial on a GPU)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE: also run in a child process with these")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    run(args)
    if args.env:
        child = [a for a in sys.argv[1:] if a not in args.env and a != "--env"]
        env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.env))
        print(f"again with {' '.join(args.env)}:", flush=True)
        subprocess.run([sys.executable, __file__, *child], env=env, check=False)


if __name__ == "__main__":
    main()
