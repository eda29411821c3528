"""bf16 mixed precision against float32 on this CPU, in one run: trials' time and accuracy, and a
feature pass's time. What ``device.cpu_has_fast_bf16`` (bf16 by default on CPUs with AMX) rests on.

    python bench/cpu_precision.py --threads 2            # ~12 minutes on the 2-core VM
    python bench/cpu_precision.py --seeds 1 --quick      # one seed, the linear probes only
    python bench/cpu_precision.py --threads 2 --steps-only   # the training-step table alone

First, one whole-model training step of five models (EfficientNet-Lite0, MobileNetV3-L, ConvNeXt-T
with depthwise convolutions; RegNetY-400MF with grouped, not depthwise, ones; ResNet-18 with
neither) in float32, plain bf16 autocast and as a trial trains (``device.training_autocast``).

Each row is one trial setting (built-in dataset, size, freeze, seed) run twice with the same seed,
once with ``TLCORE_CPU_BF16=0`` (float32) and once with ``=1`` (bf16 autocast for the frozen layers,
i.e. the probe's features or the cached prefix, and for training, with depthwise convolutions in
float32, see ``device.training_autocast``; a probe's head, and trials under 64 px, train in float32
either way: ``engine.training_dtype``), each from cold feature caches, float32 first for even seeds
and bf16 first for odd ones: both validation accuracies, both wall times and their ratio. "last"
freezes all blocks but the last two, "half" the first half, "none" nothing. Then
EfficientNet-Lite0's penultimate features of --feature-images images at 224 px, each precision once
from cold caches. On a CPU without AMX bf16 is emulated or runs on avx512_bf16 alone; the figures
then say what it costs there.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import shutil
import statistics
import tempfile
import time

from _machine import add_machine_args, apply_machine_args

CASES = (  # (dataset, px, images per class, freeze)
    ("digits", 32, None, "all"),
    ("shapes", 48, 200, "all"),
    ("textures", 64, None, "all"),
    ("digits", 32, None, "last"),
    ("shapes", 48, 200, "last"),
    ("textures", 64, None, "last"),
    ("textures", 64, None, "half"),
    ("shapes", 128, 100, "all"),  # the command line's default size
    ("shapes", 128, 100, "last"),
    ("shapes", 128, 100, "half"),
    ("shapes", 128, 100, "none"),
)
PRECISIONS = (("float32", "0"), ("bf16", "1"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="linear probes only")
    ap.add_argument("--feature-images", type=int, default=256)
    ap.add_argument("--steps-only", action="store_true", help="only the training-step table (~2 minutes)")
    add_machine_args(ap)
    args = ap.parse_args()
    os.environ["TLCORE_HOME"] = tempfile.mkdtemp(prefix="cpu-precision-")  # cold caches
    atexit.register(shutil.rmtree, os.environ["TLCORE_HOME"], ignore_errors=True)
    apply_machine_args(args)
    import torch

    from tlcore import features, zoo
    from tlcore.device import device_name

    cpu = torch.device("cpu")
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    print(f"{device_name(cpu)}, {torch.get_num_threads()} threads, AMX {'yes' if amx else 'no'}, "
          f"torch {torch.__version__}", flush=True)
    training_steps()
    if args.steps_only:
        return
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec, device=cpu)
    trials(args, spec, model)
    feature_pass(args, spec, model, features)


STEP_MODELS = ("efficientnet_lite0", "mobilenet_v3_large", "convnext_tiny", "regnet_y_400mf", "resnet18")


def training_steps(size: int = 128, batch: int = 32, repeat: int = 4) -> None:
    """Why ``device.training_autocast`` keeps depthwise convolutions in float32: one whole-model
    training step (forward, backward, SGD; channels_last, random weights: timing does not depend on
    them) in float32, in plain bf16 autocast, and as a trial trains (bf16 with depthwise ones in
    float32), median of ``repeat`` after one warm-up."""
    import torch

    from tlcore import zoo
    from tlcore.device import training_autocast

    print(f"training step, batch {batch} at {size} px (ms)    float32   bf16 autocast   as trials train "
          "(depthwise in float32)", flush=True)
    cpu = torch.device("cpu")
    os.environ["TLCORE_CPU_BF16"] = "1"
    plain = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    for key in STEP_MODELS:
        torch.manual_seed(0)
        model = zoo.build(zoo.get_spec(key)).to(memory_format=torch.channels_last).train()
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        ms = [median_ms(functools.partial(one_step, model, x, y, opt, precision), repeat)
              for precision in (contextlib.nullcontext, plain, lambda: training_autocast(cpu, torch.bfloat16))]
        print(f"  {key:20s} {ms[0]:9.0f} {ms[1]:9.0f} ({ms[0] / ms[1]:4.2f}×) {ms[2]:9.0f} ({ms[0] / ms[2]:4.2f}×)",
              flush=True)


def one_step(model, x, y, opt, precision) -> None:
    import torch

    with precision():
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def median_ms(step, repeat: int) -> float:
    step()  # warm-up: oneDNN builds its kernels for the shape
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def trials(args, spec, model) -> None:
    from tlcore import data, zoo
    from tlcore.finetune import TrialConfig, run_trial
    from tlcore.finetune.engine import CPU_MIXED_TRAINING_MIN_PX

    n_blocks = len(zoo.blocks_of(spec))
    gains: dict[str, list[float]] = {}
    speed: dict[str, list[float]] = {}
    print("dataset   px  read  train freeze seed   float32 acc     s   bf16 acc     s    Δacc  bf16 speed-up",
          flush=True)
    for name, size, cap, freeze in CASES:
        if args.quick and freeze != "all":
            continue
        for seed in range(args.seeds):
            ds = data.load(name, size=size, max_per_class=cap, seed=seed)
            depth = {"all": "all", "last": n_blocks - 2, "half": n_blocks // 2, "none": 0}[freeze]
            cfg = TrialConfig(model=spec.key, freeze=depth, epochs=args.epochs, seed=seed)
            runs = {}
            for label, flag in PRECISIONS[::-1] if seed % 2 else PRECISIONS:  # neither always runs first
                os.environ["TLCORE_CPU_BF16"] = flag
                cold_features()  # digits' images are the same for every seed: nothing read from the last
                started = time.perf_counter()
                result = run_trial(cfg, ds, device="cpu", model=model)
                runs[label] = (result.val_acc, time.perf_counter() - started, result.timings.trained_in)
            (acc32, s32, p32), (acc16, s16, p16) = runs["float32"], runs["bf16"]
            read = result.input_px  # the model's: Lite0 reads images under 64 px enlarged to 64
            mixed = freeze != "all" and read >= CPU_MIXED_TRAINING_MIN_PX  # a probe's head: float32
            assert (p32, p16) == ("float32", "bfloat16" if mixed else "float32"), (p32, p16)  # as labelled
            gains.setdefault(freeze, []).append(acc16 - acc32)
            speed.setdefault(freeze, []).append(s32 / s16)
            print(f"{name:9s} {size:3d}  {read:4d}  {len(ds.train_idx):5d} {freeze:6s} {seed:4d}   {acc32:11.4f} {s32:5.1f}"
                  f" {acc16:10.4f} {s16:5.1f}  {acc16 - acc32:+.4f}  {s32 / s16:5.2f}×", flush=True)
    for freeze, diffs in gains.items():
        print(f"freeze {freeze}: bf16 − float32 accuracy mean {statistics.mean(diffs):+.4f} "
              f"(from {min(diffs):+.4f} to {max(diffs):+.4f}) over {len(diffs)} trials; "
              f"speed-up median {statistics.median(speed[freeze]):.2f}×", flush=True)


def cold_features() -> None:
    from tlcore import features, paths

    features._MEMORY.clear()  # noqa: SLF001
    shutil.rmtree(paths.folder("features"), ignore_errors=True)


def feature_pass(args, spec, model, features) -> None:
    """Penultimate features at 224 px (the recommender's and scores' pass), each precision cold."""
    from tlcore import data

    ds = data.load("textures", size=224, max_per_class=max(1, args.feature_images // 4))
    seconds = {}
    for label, flag in PRECISIONS:
        os.environ["TLCORE_CPU_BF16"] = flag
        cold_features()
        started = time.perf_counter()
        feats = features.extract(spec, ds, model=model, device="cpu")
        seconds[label] = time.perf_counter() - started
        print(f"features, {len(ds)} images at 224 px, {label}: {seconds[label]:.2f} s "
              f"({seconds[label] / len(ds) * 1e3:.1f} ms an image), {tuple(feats.shape)}", flush=True)
    print(f"feature pass bf16 speed-up: {seconds['float32'] / seconds['bf16']:.2f}×")


if __name__ == "__main__":
    main()
