"""Feature-visualisation quality per setting: which steps and learning rate are enough, per model.

    python bench/vis_quality.py --quick --threads 1   # CPU: EfficientNet-Lite0 only, 96 px (~6.5 min, 2 cores)
    python bench/vis_quality.py                       # all three Lite models (on a GPU: 128 px, seconds)

For each model, three layers of ``zoo.layers(spec)`` (at 25 %, 50 % and 80 % of the list: an
early, a middle and a late one), each lr of --lrs and each step count of --steps, renders
--channels channels in one batch with ``tlcore.vis.render.render`` (use_cache=False, seed 0: a
channel starts from the same image in every setting) and prints, as each render finishes, the
median over the channels of the activation ratio against the textures dataset at the same size —
(render − dataset median) / (dataset max − dataset median) of the channel's mean activation —
and the render's wall time. The channels are spread evenly over those that vary on the dataset
(a channel with max = median has no ratio). Each step count is its own render: ``render`` returns
only the final image.

At the end, per model: each (steps, lr)'s median over the layers of the per-layer medians, and as
"suggested defaults" the cheapest (fewest steps; then the higher score) whose figure reaches
--target (90 %) of the best figure seen for that model. Prints figures, not verdicts.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _machine import add_machine_args, apply_machine_args

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def pick_layers(spec, fractions: list[float]) -> list[str]:
    from tlcore import zoo

    names = [layer.name for layer in zoo.layers(spec)]
    picked = [names[min(len(names) - 1, int(f * len(names)))] for f in fractions]
    return list(dict.fromkeys(picked))  # a short list could give one layer twice


def pick_channels(stats, n: int) -> list[int]:
    """``n`` channels spread evenly over those whose dataset max is above their median."""
    acts = stats.acts.double()
    live = [c for c in range(stats.channels)
            if acts[:, c].max().item() - acts[:, c].median().item() > 1e-6 * max(1.0, abs(acts[:, c].max().item()))]
    if len(live) <= n:
        return live
    return [live[round(i * (len(live) - 1) / (n - 1))] for i in range(n)] if n > 1 else live[:1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=LITE)
    ap.add_argument("--quick", action="store_true", help="only the first of --models")
    ap.add_argument("--at", type=float, nargs="+", default=[0.25, 0.5, 0.8],
                    help="layers at these fractions of zoo.layers(spec)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    ap.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--size", type=int, default=None, help="px, square (default 128 GPU / 96 CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.9, help="share of the best median ratio that is enough")
    add_machine_args(ap)
    args = ap.parse_args()
    apply_machine_args(args)

    from tlcore import data, zoo
    from tlcore.device import device_name, pick_device, synchronize
    from tlcore.vis.examples import layer_stats
    from tlcore.vis.render import RenderConfig, defaults, render

    device = pick_device(args.device)
    size = args.size or defaults(device).size
    models = args.models[:1] if args.quick else args.models
    steps_grid, lrs = sorted(set(args.steps)), sorted(set(args.lrs))
    dataset = data.load("textures", size=size)
    print(f"{args.channels} channels per render in one batch, {size} px, seed {args.seed}, {device_name(device)}; "
          f"activation ratio vs textures ({len(dataset)} images, {size} px)", flush=True)
    print(f"{'model':<20} {'layer':<12} {'lr':>5} {'steps':>5} {'median ratio':>12} {'seconds':>8}", flush=True)

    suggestions = []
    for key in models:
        spec = zoo.get_spec(key)
        model = zoo.load(spec, device=device).eval()
        layers = pick_layers(spec, args.at)
        score: dict[tuple[int, float], list[float]] = {}
        warmed = False
        for layer in layers:
            stats = layer_stats(spec, dataset, layer, model=model)
            channels = pick_channels(stats, args.channels)
            if not channels:
                print(f"{key:<20} {layer:<12} no channel varies on the dataset; skipped", flush=True)
                continue
            if not warmed:  # kernels, allocator, cuDNN plans: a few steps before the first timed render
                render(spec, model, RenderConfig(layer=layer, steps=2, size=size), channels, use_cache=False)
                warmed = True
            for lr in lrs:
                for steps in steps_grid:
                    cfg = RenderConfig(layer=layer, steps=steps, size=size, lr=lr, seed=args.seed)
                    synchronize(device)
                    t = time.perf_counter()
                    made = render(spec, model, cfg, channels, use_cache=False)
                    synchronize(device)
                    seconds = time.perf_counter() - t
                    ratios = [r for m in made if (r := stats.ratio(m.target, m.activation)) is not None]
                    med = statistics.median(ratios) if ratios else float("nan")
                    score.setdefault((steps, lr), []).append(med)
                    print(f"{key:<20} {layer:<12} {lr:>5g} {steps:>5} {med:>12.2f} {seconds:>8.2f}", flush=True)
        if not score:
            continue
        overall = {k: statistics.median(v) for k, v in score.items()}  # NaN: no channel had a ratio
        print(f"{key}: median over {len(layers)} layers ({', '.join(layers)}) per steps × lr:", flush=True)
        print("  steps " + "".join(f"{f'lr {lr:g}':>10}" for lr in lrs))
        for steps in steps_grid:
            print(f"  {steps:>5} " + "".join(f"{overall[(steps, lr)]:>10.2f}" for lr in lrs))
        finite = {k: v for k, v in overall.items() if v == v}
        best_key = max(finite, key=finite.get, default=None)
        if best_key is None or finite[best_key] <= 0:
            print(f"{key}: no setting lifted the channels above the dataset's median; no suggestion")
            continue
        best = finite[best_key]
        enough = [k for k, v in finite.items() if v >= args.target * best]
        cheap = min(enough, key=lambda k: (k[0], -overall[k]))
        suggestions.append((key, cheap, overall[cheap], best, best_key))

    print(f"suggested defaults (fewest steps reaching {args.target:.0%} of the model's best median ratio):")
    for key, (steps, lr), value, best, (best_steps, best_lr) in suggestions:
        print(f"  {key:<20} steps {steps:>4}, lr {lr:g}: median ratio {value:.2f} "
              f"({value / best:.0%} of the best, {best:.2f} at steps {best_steps}, lr {best_lr:g})")


if __name__ == "__main__":
    main()
