"""Memory layout of a trial's convolutions: NCHW against channels_last, on this device.

    python bench/layout_speed.py --device cuda                      # the GPU question (~1 minute)
    python bench/layout_speed.py --threads 1 --size 64 --batch 32   # a CPU check (~1 minute)

``device.input_format`` feeds models channels_last on a CPU (measured with this script) and NCHW on
CUDA: there channels_last ran faster once warm, but the warm-up this script does hides what a cold
trial pays, 3–6 s of cuDNN set-up per new input shape (seen on an H200).
This times, in one process and on the same random-weight model, the three ways a trial could run:
NCHW weights and input; NCHW weights with a channels_last input (what switching
``input_format`` alone would do); channels_last weights and input (a trial's own copy converted).
Each for inference (a frozen prefix's pass, ``inference_mode``) and for a training step
(forward, backward, SGD step), in the device's mixed precision (``device.mixed_dtype``: bf16
autocast on CUDA and AMX CPUs, float32 elsewhere; a training step under
``device.training_autocast``, as a trial's), median of --repeat calls after a warm-up, the clock read after synchronising. Prints
milliseconds and the ratio to NCHW; the choice is made from these figures, not here.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _machine import add_machine_args, apply_machine_args

LAYOUTS = (  # (name, weights' layout, input's layout)
    ("NCHW", torch.contiguous_format, torch.contiguous_format),
    ("channels_last input", torch.contiguous_format, torch.channels_last),
    ("channels_last both", torch.channels_last, torch.channels_last),
)


def median_ms(work, x: torch.Tensor, warmup: int, repeat: int) -> float:
    """Median milliseconds of ``work(x)``, timed as the zoo's latencies are (tlcore.bench.call_clock:
    CUDA events on a GPU, the wall clock after synchronising elsewhere)."""
    from tlcore.bench import call_clock

    call = call_clock(work, x)
    for _ in range(warmup):
        call()
    return statistics.median(call() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)
    from tlcore import zoo
    from tlcore.device import autocast, device_name, mixed_dtype, pick_device, training_autocast

    dev = pick_device(args.device)
    spec = zoo.get_spec(args.model)
    print(f"{spec.model} at {args.size} px on {device_name(dev)}, autocast {mixed_dtype(dev) or 'none (float32)'}, "
          f"median of {args.repeat}", flush=True)
    for batch in args.batch:
        x0 = torch.randn(batch, 3, args.size, args.size, device=dev)
        y = torch.randint(0, spec.num_classes, (batch,), device=dev)
        base = {}
        for name, weights, inputs in LAYOUTS:
            torch.manual_seed(0)
            model = zoo.build(spec).to(dev, memory_format=weights)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            x = x0.contiguous(memory_format=inputs)

            def infer(x, model=model):
                with torch.inference_mode(), autocast(dev):
                    model(x)

            def train_step(x, model=model, opt=opt, y=y):
                with training_autocast(dev, mixed_dtype(dev)):
                    loss = torch.nn.functional.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            model.eval()
            t_infer = median_ms(infer, x, args.warmup, args.repeat)
            model.train()
            t_train = median_ms(train_step, x, args.warmup, args.repeat)
            base.setdefault("infer", t_infer)
            base.setdefault("train", t_train)
            print(f"  batch {batch:4d}  {name:20s}  inference {t_infer:9.2f} ms ({base['infer'] / t_infer:4.2f}× NCHW)"
                  f"   training step {t_train:9.2f} ms ({base['train'] / t_train:4.2f}× NCHW)", flush=True)
            del model, opt


if __name__ == "__main__":
    main()
