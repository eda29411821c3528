"""Feature-visualisation speed: lucent's ``render_vis`` one channel at a time vs tlcore.vis.render
with every channel in one batch — same model, layer, steps, size, learning rate and robustness ranges.

    python bench/vis_speed.py --threads 1         # CPU: 8 channels, 64 steps, 96 px (~1 min, 2-core VM)
    python bench/vis_speed.py --device cuda       # GPU: 32 channels, 256 steps, 128 px
    python bench/vis_speed.py --threads 2 --fold  # ours with BatchNorms folded against the model as it is

(--threads 1 on a small shared VM: with 2 threads, one stalled vCPU holds every parallel op up and
single steps took 30× longer at random on the 2-core machine this was written on.)

Lucent's side is the usual recipe: ``render_vis(model, "layer:channel", param.image(size),
standard_transforms, thresholds=(steps,))`` per channel, Adam lr 0.05, with two corrections so it
renders what ours renders: ``preprocess=False`` plus a normalisation with the model's own mean/std
appended to the transforms (lucent's default is ImageNet's, wrong for the Lite models), and
``fixed_image_size=size + 24`` (otherwise lucent upsamples anything under 224 px before the network;
both sides pad the image by 12 px of grey, and ours feeds the padded size+24 px to the network, so
lucent's transformed image is resized to the same). Both sides freeze the model's weights (lucent's
``loss.backward()`` would otherwise also compute the weights' gradients: that would slow lucent).
It runs the whole network in fp32 every step; ours stops the forward pass at the layer and uses
bf16 autocast on CUDA. Lucent is timed on the first --lucent-channels channels only and reported
per channel; ours renders all --channels in one call and is reported per channel and for the
whole gallery. Each side is timed --repeat times, alternating, after a short warm-up; the
figures are the medians.

Quality, so speed is not bought with worse images: both sides' final images (as uint8, as the app
shows them) go through the same fp32 measurement — the channel's mean activation at the layer —
and become the activation ratio against the textures dataset at the same size:
(render − dataset median) / (dataset max − dataset median). Prints figures and ratios, not verdicts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _machine import add_machine_args, apply_machine_args
from torch import nn


def lucent_layer_name(layer: str) -> str:
    """Lucent's name for a module path: ``hook_model`` joins the path's parts with "_"
    ("_blocks.8" → "_blocks_8")."""
    return "_".join(layer.split("."))


def lucent_render(model: nn.Module, spec, layer: str, channel: int, steps: int, size: int, lr: float,
                  seed: int, net_size: int) -> np.ndarray:
    """One channel with lucent; the final image as size×size×3 float in [0, 1]."""
    from lucent.optvis import param, render, transform

    np.random.seed(seed)  # lucent draws its start (torch) and its transforms (numpy) from the global RNGs
    torch.manual_seed(seed)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - mean.to(x.device)) / std.to(x.device)

    # render_vis hooks every module on each call and never removes the hooks: remove what this
    # call added (the same model object is reused, so hooks would otherwise pile up and slow
    # later channels down — unfair to lucent).
    before = {m: set(m._forward_hooks) for m in model.modules()}
    try:
        images = render.render_vis(
            model, f"{lucent_layer_name(layer)}:{channel}", param_f=lambda: param.image(size),
            optimizer=lambda params: torch.optim.Adam(params, lr=lr),
            transforms=[*transform.standard_transforms, normalise], thresholds=(steps,),
            preprocess=False, progress=False, show_image=False, fixed_image_size=net_size)
    finally:
        for m, keys in before.items():
            for k in set(m._forward_hooks) - keys:
                del m._forward_hooks[k]
    return images[-1][0]


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def mean_activations(model: nn.Module, spec, layer: str, images: list[np.ndarray], channels: list[int],
                     device: torch.device) -> list[float]:
    """Each uint8 image's mean activation of its channel at ``layer`` (fp32, no autocast)."""
    from tlcore import features
    from tlcore.hooks import Capture, Target, module_at

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).to(device)
    with Capture(model, [Target(layer, module_at(model, layer))]) as capture:
        acts = capture(features.standardise(x, spec))[layer].float()
    return [float(acts[i, c].mean()) for i, c in enumerate(channels)]


def median_ratio(stats, channels: list[int], activations: list[float]) -> float:
    ratios = [r for c, a in zip(channels, activations, strict=True) if (r := stats.ratio(c, a)) is not None]
    return statistics.median(ratios) if ratios else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default="_blocks.8", help="module path (tlcore layers MODEL)")
    ap.add_argument("--channels", type=int, default=None, help="channels 0…N-1 (default: the page's gallery, 32 GPU / 8 CPU)")
    ap.add_argument("--steps", type=int, default=None, help="default 256 GPU / 64 CPU")
    ap.add_argument("--size", type=int, default=None, help="px, square (default 128 GPU / 96 CPU)")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's step (lucent's default)")
    ap.add_argument("--lucent-channels", type=int, default=None,
                    help="time lucent on the first K channels only (default min(N, 4))")
    ap.add_argument("--repeat", type=int, default=3, help="timing rounds (each side: the median)")
    ap.add_argument("--fold", action="store_true",
                    help="only ours, with the model's BatchNorms folded into its convolutions (as renders run) "
                         "against the model as it is")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)

    from lucent.optvis.param.spatial import device as lucent_device

    from tlcore import data, zoo
    from tlcore.device import device_name, pick_device, synchronize
    from tlcore.vis.examples import layer_stats
    from tlcore.vis.render import RenderConfig, defaults, render
    from tlcore.vis.transforms import PAD

    device = pick_device(args.device)
    d = defaults(device)  # the page's gallery on this device
    n, steps, size = args.channels or d.channels, args.steps or d.steps, args.size or d.size
    k = min(n, args.lucent_channels or 4)
    net_size = size + 2 * PAD  # what the network sees: the image with its grey padding
    if torch.device(device.type, device.index or 0) != torch.device(lucent_device.type, lucent_device.index or 0):
        raise SystemExit(f"lucent puts its tensors on {lucent_device} (chosen at import); run with "
                         f"--device {lucent_device}")
    spec = zoo.get_spec(args.model)
    model = zoo.load(spec, device=device).eval()
    for p in model.parameters():  # neither side trains the model: lucent's backward would fill .grad
        p.requires_grad_(False)
    channels = list(range(n))
    print(f"{args.model} {args.layer}, {steps} steps, {size} px ({net_size} px padded into the network), "
          f"lr {args.lr}, {device_name(device)}; "
          f"ours: {n} channels in one batch; lucent: first {k} channels, batch 1 each", flush=True)

    stats = layer_stats(spec, data.load("textures", size=size), args.layer, model=model)
    if args.fold:
        return fold_comparison(spec, model, RenderConfig(layer=args.layer, steps=steps, size=size, lr=args.lr),
                               channels, stats, args.repeat, device)

    # Warm-up: kernels, cuDNN plans, allocator — a few steps each, at the batch sizes timed below.
    render(spec, model, RenderConfig(layer=args.layer, steps=3, size=size, lr=args.lr), channels, use_cache=False)
    lucent_render(model, spec, args.layer, 0, 3, size, args.lr, seed=0, net_size=net_size)
    synchronize(device)

    # Rounds alternate the two sides, and each side's figure is its median over the rounds: a
    # shared machine's slow spells then hit both sides alike instead of deciding the ratio.
    cfg = RenderConfig(layer=args.layer, steps=steps, size=size, lr=args.lr)
    lucent_rounds, ours_rounds = [], []
    for rnd in range(args.repeat):
        lucent_images, seconds = [], []
        for c in channels[:k]:
            synchronize(device)
            t = time.perf_counter()
            image = lucent_render(model, spec, args.layer, c, steps, size, args.lr, seed=c, net_size=net_size)
            synchronize(device)
            seconds.append(time.perf_counter() - t)
            lucent_images.append(to_uint8(image))
        lucent_rounds.append(sum(seconds) / k)
        synchronize(device)
        t = time.perf_counter()
        ours = render(spec, model, cfg, channels, use_cache=False)
        synchronize(device)
        ours_rounds.append(time.perf_counter() - t)
        print(f"  round {rnd + 1}: lucent {k} channels " + " ".join(f"{s:.2f}" for s in seconds)
              + f" s ({lucent_rounds[-1]:.3f} s per channel); ours {n} channels {ours_rounds[-1]:.2f} s "
              f"({ours_rounds[-1] / n:.3f} s per channel)", flush=True)
    lucent_per = statistics.median(lucent_rounds)
    ours_wall = statistics.median(ours_rounds)
    ours_per = ours_wall / n

    ours_acts = mean_activations(model, spec, args.layer, [r.image for r in ours], channels, device)
    lucent_acts = mean_activations(model, spec, args.layer, lucent_images, channels[:k], device)
    q_lucent = median_ratio(stats, channels[:k], lucent_acts)
    q_ours_k = median_ratio(stats, channels[:k], ours_acts[:k])
    q_ours = median_ratio(stats, channels, ours_acts)

    print(f"medians over {args.repeat} rounds:")
    print(f"lucent render_vis  {lucent_per:8.3f} s per channel  (median activation ratio {q_lucent:.2f}, "
          f"channels 0…{k - 1})")
    print(f"tlcore render      {ours_per:8.3f} s per channel  (median activation ratio {q_ours_k:.2f} on "
          f"channels 0…{k - 1}, {q_ours:.2f} on all {n})")
    print(f"ours, the whole {n}-channel gallery: {ours_wall:.2f} s "
          "(the issue's goal: 32 channels, 256 steps, 128 px in under 10 s on an H100)")
    print(f"ratio (lucent / ours, per channel): {lucent_per / ours_per:.2f}")
    print("per channel activation ratio, lucent vs ours: " + ", ".join(
        f"{c}: {stats.ratio(c, a):.2f}/{stats.ratio(c, b):.2f}"
        if stats.ratio(c, a) is not None and stats.ratio(c, b) is not None else f"{c}: n/a"
        for c, a, b in zip(channels[:k], lucent_acts, ours_acts[:k], strict=True)))


def fold_comparison(spec, model, cfg, channels, stats, repeat: int, device) -> None:
    """Ours on the model as it is and folded (tlcore.fold), alternating (fold_speed.alternate)."""
    from fold_speed import alternate

    from tlcore.device import synchronize
    from tlcore.vis import render as R

    def once():
        synchronize(device)
        t = time.perf_counter()
        images = R.render(spec, model, cfg, channels, use_cache=False)
        synchronize(device)
        return time.perf_counter() - t, images

    seconds, images = alternate(R, once, repeat)
    for name in seconds:
        acts = mean_activations(model, spec, cfg.layer, [r.image for r in images[name]], channels, device)
        print(f"ours, model {name:8s} {seconds[name]:6.2f} s for {len(channels)} channels "
              f"(median activation ratio {median_ratio(stats, channels, acts):.2f})", flush=True)
    print(f"ratio (as it is / folded): {seconds['as it is'] / seconds['folded']:.2f}")


if __name__ == "__main__":
    main()
