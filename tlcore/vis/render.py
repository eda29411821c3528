"""Feature visualisation: optimise images so a unit of the network responds strongly.

Our own loop around lucent's pieces (see ``param``, ``transforms``, ``objectives`` for what is
lucent's and why the rest is not): hooks live only inside the call (``tlcore.hooks.Capture``),
the forward pass stops at the target layer, the input is normalised the model's own way, and
gradients go to the image alone (``backward(inputs=...)``), so a shared model is only read.
Many channels are one batch, one image each. Renders are cached on disk per channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from tlcore import features, paths, zoo
from tlcore.device import autocast, halved, mixed_dtype, out_of_memory, unless_out_of_memory, working
from tlcore.fold import folded
from tlcore.hooks import Capture, Target, module_at
from tlcore.settings import demo_mode, limits
from tlcore.vis import objectives
from tlcore.vis.param import PARAMETERISATION, fft_image
from tlcore.vis.transforms import Robustness

ROBUSTNESS = "lucent-standard-v1"  # part of the cache key: change it when the transforms change


class RenderCancelled(Exception):
    """The caller's ``should_stop`` said so; nothing was cached."""


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """One render setting; ``lr`` is Adam's step on the image's spectrum (lucent's default)."""

    layer: str  # a module path (``tlcore layers MODEL``)
    objective: objectives.Kind = "channel"
    steps: int = 64
    size: int = 96  # px, square
    lr: float = 0.05
    seed: int = 0

    def check(self, model: nn.Module) -> None:
        """Raise ValueError naming what is wrong and what is allowed."""
        module_at(model, self.layer)
        if self.objective not in objectives.KINDS:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of: {', '.join(objectives.KINDS)}")
        cap = limits()
        where = " here (demo mode)" if demo_mode() else ""
        if not 1 <= self.steps <= cap.max_vis_steps:
            raise ValueError(f"steps must be 1…{cap.max_vis_steps}{where}, got {self.steps}")
        if not 16 <= self.size <= cap.max_vis_size:
            raise ValueError(f"size must be 16…{cap.max_vis_size} px{where}, got {self.size}")
        if not 0 < self.lr <= 10:
            raise ValueError(f"learning rate must be in (0, 10], got {self.lr}")


@dataclass(frozen=True)
class Defaults:
    """Starting settings for a gallery on a device (see bench/vis_quality.py for how they were chosen)."""

    channels: int
    steps: int
    size: int
    lr: float
    dream_side: int  # px, the longer side a DeepDream photo is shrunk to


def defaults(device: torch.device) -> Defaults:
    """One setting serves the three offline Lite models (bench/vis_quality.py, 2-core CPU, 96 px,
    median activation ratio over an early, a middle and a late layer): lr 0.05 was the best or
    within 0.04 of it at every step count for each; the ratio keeps rising with steps (128 → 256
    still +8 %), and 64 steps reach 86–88 % of 128's at half the time. So a CPU gallery is 8
    channels × 64 steps at 96 px (about 5–8 s on 2 cores); a GPU one is the issue's 32 × 256 at 128 px."""
    if device.type == "cpu":
        chosen = Defaults(channels=8, steps=64, size=96, lr=0.05, dream_side=384)
    else:
        chosen = Defaults(channels=32, steps=256, size=128, lr=0.05, dream_side=512)
    cap = limits()  # a demo's caps win
    return Defaults(channels=min(chosen.channels, cap.max_vis_channels), steps=min(chosen.steps, cap.max_vis_steps),
                    size=min(chosen.size, cap.max_vis_size), lr=chosen.lr,
                    dream_side=min(chosen.dream_side, cap.max_dream_side))


@dataclass(frozen=True)
class Render:
    target: int  # the channel (for "direction": the class; for "layer": the variation number)
    image: np.ndarray  # size×size×3 uint8
    activation: float | None  # mean of the target channel over the final image (None: no channel)
    seconds: float  # this item's share of the optimisation (0 when read from the cache)
    cached: bool


def render(spec: zoo.ModelSpec, model: nn.Module, cfg: RenderConfig, targets: Sequence[int], *,
           weights: str = "pretrained", directions: torch.Tensor | None = None,
           on_step: Callable[[int, int], None] | None = None,
           should_stop: Callable[[], bool] | None = None, use_cache: bool = True,
           only_cached: bool = False) -> list[Render] | None:
    """One render per target (a channel of ``cfg.layer``), those not cached optimised together.

    ``weights`` names the weights in the cache key ("pretrained", or a fine-tuned run's id).
    ``directions``: for the "direction" objective, one C-vector per target (e.g. a class's mean
    activation minus the dataset's, from ``examples.class_directions``).
    ``on_step(done, total)`` reports progress; ``should_stop()`` cancels (RenderCancelled).
    ``only_cached``: None instead of optimising when any target is not in the cache.
    """
    cfg.check(model)
    _check_targets(spec, model, cfg, targets)
    if cfg.objective == "direction":
        if directions is None or directions.shape[0] != len(targets):
            raise ValueError("a direction render needs one direction per target")
        directions = directions.float()
        extras = [hashlib.sha256(row.cpu().numpy().tobytes()).hexdigest()[:16] for row in directions]
    else:
        extras = [""] * len(targets)
    keys = [_key(spec, weights, cfg, t, e) for t, e in zip(targets, extras, strict=True)]
    # A run's weights, or directions from a visitor's data: their private space in a shared demo.
    private = weights != "pretrained" or directions is not None
    found = {t: _read(k, private) for t, k in zip(targets, keys, strict=True)} if use_cache else {}
    missing = [t for t in targets if found.get(t) is None]
    if missing and only_cached:
        return None
    if missing:
        def optimise(part: list[int]) -> list[Render]:
            rows = None if directions is None else directions[[list(targets).index(t) for t in part]]
            return _optimise(model, spec, cfg, part, objectives.per_item(cfg.objective, cfg.layer, part,
                                                                         _on(rows, model)),
                             [_item_seed(cfg.seed, t) for t in part], on_step, should_stop)

        made = in_halves_on_oom(optimise, missing, f"image at {cfg.size} px")
        key_of = dict(zip(targets, keys, strict=True))
        for t, r in zip(missing, made, strict=True):
            found[t] = r
            _write(key_of[t], r, private)
    return [found[t] for t in targets]


T = TypeVar("T")
R = TypeVar("R")


def in_halves_on_oom(run: Callable[[list[T]], list[R]], items: list[T], what: str) -> list[R]:
    """``run(items)``; when the device runs out of memory, the items go in two halves (and so on
    down to one). Each render has its own seeded generators, so the halves give the images one
    batch would have given. A single item that does not fit is a TooLargeForDevice that says so."""
    made = unless_out_of_memory(run, items)
    if made is not None:
        return made
    half = halved(len(items), f"{what}: choose a smaller size or fewer layers")
    return in_halves_on_oom(run, items[:half], what) + in_halves_on_oom(run, items[half:], what)


def render_diverse(spec: zoo.ModelSpec, model: nn.Module, cfg: RenderConfig, channel: int, n: int = 4, *,
                   weights: str = "pretrained", on_step=None, should_stop=None,
                   use_cache: bool = True, only_cached: bool = False) -> list[Render] | None:
    """``n`` images of one channel pushed apart from each other (lucent's diversity objective):
    the different things a channel responds to. Cached as one group."""
    cfg = RenderConfig(**{**asdict(cfg), "objective": "channel"})
    cfg.check(model)
    _check_targets(spec, model, cfg, [channel])
    keys = [_key(spec, weights, cfg, channel, f"diverse{n}-{i}") for i in range(n)]
    private = weights != "pretrained"
    found = [_read(k, private) for k in keys] if use_cache else [None] * n
    if any(r is None for r in found) and only_cached:
        return None
    if any(r is None for r in found):
        seeds = [_item_seed(cfg.seed, channel, f"diverse{i}") for i in range(n)]
        found = _optimise(model, spec, cfg, [channel] * n, objectives.diverse(cfg.layer, channel), seeds,
                          on_step, should_stop)
        for k, r in zip(keys, found, strict=True):
            _write(k, r, private)
    return found


def _optimise(model: nn.Module, spec: zoo.ModelSpec, cfg: RenderConfig, targets: list[int], objective,
              seeds: list[int], on_step, should_stop) -> list[Render]:
    started = time.perf_counter()
    dev = next(model.parameters()).device
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    spectrum, image = fft_image(cfg.size, gens, device=dev)
    robust = Robustness(gens, cfg.steps, dev)
    opt = torch.optim.Adam([spectrum], lr=cfg.lr)
    model = folded(model.eval(), keep=(cfg.layer,), dtype=model_dtype(dev))
    with working(dev), Capture(model, [Target(cfg.layer, module_at(model, cfg.layer))]) as capture, \
            torch.enable_grad():
        for step in range(cfg.steps):
            if should_stop is not None and should_stop():
                raise RenderCancelled()
            with too_small_as_message(f"{cfg.layer} at {cfg.size} px", first=step == 0):
                x = features.standardise(robust(image(), step), spec)  # the image itself stays float32
                with model_precision(dev):  # only the model runs in mixed precision
                    acts = capture(x)
            loss = objective(lambda name, acts=acts: acts[name].float())
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[spectrum])  # the image's gradient only: the model is never written
            opt.step()
            if on_step is not None:
                on_step(step + 1, cfg.steps)
        with torch.no_grad():
            final = image()  # outside autocast: its colour product would run in bf16 on a GPU
            with model_precision(dev):
                layer = capture(features.standardise(final, spec))[cfg.layer].float()
    pixels = (final.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    means = layer.mean(dim=(2, 3)).cpu()  # N×C: each image's mean activation per channel
    share = (time.perf_counter() - started) / len(targets)
    has_channel = cfg.objective in ("channel", "neuron")
    return [Render(t, pixels[i], float(means[i, t]) if has_channel else None, share, False)
            for i, t in enumerate(targets)]


def model_precision(dev: torch.device):
    """The model's autocast in a render or a dream (``model_dtype``)."""
    return autocast(dev, enabled=model_dtype(dev) is not None)


def model_dtype(dev: torch.device) -> torch.dtype | None:
    """The device's mixed precision on a GPU, float32 (None) on a CPU even where trials use bf16
    (cpu_has_fast_bf16). On the AMX VM bf16 renders were 0–18% slower (8 channels at 96 px, 32 and
    64 steps) and dreams 5–10% faster, activations alike: no gain worth images that depend on the
    CPU."""
    return None if dev.type == "cpu" else mixed_dtype(dev)


@contextlib.contextmanager
def too_small_as_message(what: str, *, first: bool = True) -> Iterator[None]:
    """A first forward pass that fails on its input size (a deep layer of AlexNet at 40 px) becomes
    a ValueError that says so; other errors (out of memory) pass through."""
    try:
        yield
    except RuntimeError as err:
        if not first or out_of_memory(err):
            raise
        raise ValueError(f"{what} is too small for the network ({str(err).splitlines()[0][:120]}); "
                         "choose a larger size or an earlier layer") from None


def _check_targets(spec: zoo.ModelSpec, model: nn.Module, cfg: RenderConfig, targets: Sequence[int]) -> None:
    if not targets:
        raise ValueError("choose at least one channel")
    if len(targets) > limits().max_vis_channels:
        raise ValueError(f"at most {limits().max_vis_channels} channels in one render"
                         f"{' here (demo mode)' if demo_mode() else ''}, got {len(targets)}")
    if cfg.objective in ("channel", "neuron"):
        known = {layer.name: layer.channels for layer in zoo.layers(spec)}
        channels = known.get(cfg.layer) or channel_count(model, cfg.layer, spec.crop_size)
        bad = [t for t in targets if not 0 <= t < channels]
        if bad:
            raise ValueError(f"{cfg.layer} has channels 0…{channels - 1}; got {bad[:5]}")


def channel_count(model: nn.Module, layer: str, probe_size: int = 224) -> int:
    """Output channels of the module at ``layer`` (from its weights, or one pass at ``probe_size``)."""
    module = module_at(model, layer)
    for attr in ("out_channels", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    dev = next(model.parameters()).device
    with Capture(model, [Target(layer, module)]) as capture, torch.no_grad():
        out = capture(torch.zeros(1, 3, probe_size, probe_size, device=dev))[layer]
    if out.dim() != 4:
        raise ValueError(f"{layer} does not output channel maps (shape {tuple(out.shape)})")
    return int(out.shape[1])


def _on(direction: torch.Tensor | None, model: nn.Module) -> torch.Tensor | None:
    return None if direction is None else direction.to(next(model.parameters()).device, torch.float32)


def _item_seed(seed: int, target: int, salt: str = "") -> int:
    digest = hashlib.sha256(f"{seed}|{target}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --- disk cache: one PNG and one JSON per rendered item ---------------------------------------

_WRITE_LOCK = threading.Lock()


def _key(spec: zoo.ModelSpec, weights: str, cfg: RenderConfig, target: int, extra: str = "") -> str:
    raw = (f"{spec.key}|{weights}|{cfg.layer}|{target}|{cfg.objective}|{cfg.steps}|{cfg.size}|{cfg.lr}|"
           f"{cfg.seed}|{PARAMETERISATION}|{ROBUSTNESS}|{extra}")
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _read(key: str, private: bool) -> Render | None:
    folder = paths.folder("renders", private=private)
    png, meta = folder / f"{key}.png", folder / f"{key}.json"
    try:
        info = json.loads(meta.read_text())
        with Image.open(png) as im:
            pixels = np.array(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    paths.touch(meta)  # used now: the cache budget drops the least recently used first
    return Render(info["target"], pixels, info["activation"], 0.0, True)


def _write(key: str, r: Render, private: bool) -> None:
    folder = paths.folder("renders", private=private)
    png, meta = folder / f"{key}.png", folder / f"{key}.json"
    with _WRITE_LOCK:  # the JSON lands last: a reader never sees it without its PNG
        paths.write_atomically(png, lambda f: Image.fromarray(r.image).save(f, format="PNG"))
        paths.write_atomically(meta, lambda f: f.write(json.dumps({"target": r.target,
                                                                   "activation": r.activation}).encode()))
