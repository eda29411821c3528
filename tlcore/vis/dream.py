"""DeepDream (Mordvintsev, Olah and Tyka, 2015): change a photo so chosen layers respond more.

Gradient ascent on the layers' mean squared activation (the same ``layer_energy`` objective the
whole-layer render uses), over an image pyramid: the smallest octave first, the detail it adds
carried up to the next; each step rolls the image by a random offset (so no pixel grid is
favoured) and takes a step of the gradient divided by its mean magnitude. Pixels stay in
[0, 1] and the model sees them through its own normalisation. Lucent has no DeepDream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from lucent.optvis import objectives as lo
from torch import nn
from torch.nn import functional as F

from tlcore import features, zoo
from tlcore.device import working
from tlcore.fold import folded
from tlcore.hooks import Capture, Target, module_at
from tlcore.settings import demo_mode, limits
from tlcore.vis.objectives import layer_energy
from tlcore.vis.render import RenderCancelled, model_dtype, model_precision, too_small_as_message

MIN_SIDE = 64  # px: the smallest octave's short side (deep layers need a few pixels of map)


@dataclass(frozen=True, kw_only=True)
class DreamConfig:
    layers: tuple[str, ...]  # module paths; their energies are added
    octaves: int = 4
    octave_scale: float = 1.4  # size ratio between octaves
    # 20 steps of 0.02 grow the animal faces and eyes of the classic pictures on Lite0's _blocks.11 (10 of
    # 0.01 only hint at them; 20 of 0.03 bury the photo) in about 5 s at 384 px on 2 CPU cores.
    steps: int = 20  # per octave
    lr: float = 0.02  # pixel step ([0, 1] range) per unit of mean |gradient|
    jitter: int = 32  # px: random roll each step
    seed: int = 0

    def check(self, model: nn.Module) -> None:
        if not self.layers:
            raise ValueError("choose at least one layer")
        for layer in self.layers:
            module_at(model, layer)
        if not 1 <= self.octaves <= 8:
            raise ValueError(f"octaves must be 1…8, got {self.octaves}")
        if not 1.05 <= self.octave_scale <= 2.5:
            raise ValueError(f"octave scale must be 1.05…2.5, got {self.octave_scale}")
        if not 1 <= self.steps <= limits().max_dream_steps:
            raise ValueError(f"steps per octave must be 1…{limits().max_dream_steps}"
                             f"{' here (demo mode)' if demo_mode() else ''}, got {self.steps}")
        if not 0 < self.lr <= 1:
            raise ValueError(f"step size must be in (0, 1], got {self.lr}")
        if not 0 <= self.jitter <= 256:
            raise ValueError(f"jitter must be 0…256 px, got {self.jitter}")


@dataclass(frozen=True)
class Dream:
    image: np.ndarray  # H×W×3 uint8, the photo's size
    octaves: int  # octaves run (fewer than asked when the photo is small)
    gain: float  # the layers' energy on the dream ÷ on the photo
    seconds: float


def deepdream(spec: zoo.ModelSpec, model: nn.Module, photo: np.ndarray, cfg: DreamConfig, *,
              on_step: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Dream:
    """``photo`` (H×W×3 uint8) dreamt by ``model``'s layers; the model is only read."""
    started = time.perf_counter()
    cfg.check(model)
    if min(photo.shape[:2]) < MIN_SIDE:
        raise ValueError(f"the photo is {photo.shape[1]}×{photo.shape[0]} px: DeepDream needs at least "
                         f"{MIN_SIDE} px on its short side")
    if max(photo.shape[:2]) > limits().max_dream_side:
        raise ValueError(f"the photo is {photo.shape[1]}×{photo.shape[0]} px: at most {limits().max_dream_side} px "
                         f"on its long side{' here (demo mode)' if demo_mode() else ''}; scale it down first")
    dev = next(model.parameters()).device
    base = torch.from_numpy(np.array(photo, order="C")).to(dev)  # a copy: photo may be read-only or reversed
    base = base.permute(2, 0, 1)[None].float() / 255
    n = octaves_for(min(photo.shape[:2]), cfg)
    pyramid = [base] + [_resize(base, _scaled(base, cfg.octave_scale ** -k)) for k in range(1, n)]
    objective = lo.Objective.sum([layer_energy(layer) for layer in cfg.layers])
    gen = torch.Generator().manual_seed(cfg.seed)
    model = folded(model.eval(), keep=cfg.layers, dtype=model_dtype(dev))
    targets = [Target(layer, module_at(model, layer)) for layer in cfg.layers]
    with working(dev), Capture(model, targets) as capture:
        def energy(x: torch.Tensor) -> torch.Tensor:
            with model_precision(dev), too_small_as_message(f"{', '.join(cfg.layers)} at {x.shape[-1]}×{x.shape[-2]} px"):
                acts = capture(features.standardise(x, spec))
            return -objective(lambda name: acts[name].float())

        detail = torch.zeros_like(pyramid[-1])
        image = pyramid[-1]
        for k, octave in enumerate(reversed(pyramid)):
            detail = _resize(detail, octave.shape[-2:])
            image = _octave(octave + detail, energy, cfg, gen, should_stop,
                            lambda s, k=k: on_step and on_step(k * cfg.steps + s, n * cfg.steps))
            detail = image - octave
        with torch.no_grad():
            gain = (energy(image) / energy(base).clamp_min(1e-12)).item()
    pixels = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Dream(pixels, n, gain, time.perf_counter() - started)


def gain_text(gain: float) -> str:
    """What ``Dream.gain`` says, in words for the app and the CLI."""
    text = f"the layers' mean squared activation ×{gain:.1f} the photo's"
    return text + (" (lower: the step size is too large)" if gain < 1 else "")


def octaves_text(ran: int, asked: int) -> str:
    """'4 octaves', or '2 of 8 octaves (…)' when the photo was too small for every one asked."""
    if ran == asked:
        return f"{ran} octave{'s' * (ran != 1)}"
    return f"{ran} of {asked} octaves (a smaller one would be under {MIN_SIDE} px)"


def octaves_for(short_side: int, cfg: DreamConfig) -> int:
    """As many octaves as asked, but the smallest keeps a short side of at least MIN_SIDE."""
    fit = 1 + math.floor(math.log(max(short_side, 1) / MIN_SIDE) / math.log(cfg.octave_scale))
    return max(1, min(cfg.octaves, fit))


def _octave(image: torch.Tensor, energy, cfg: DreamConfig, gen: torch.Generator, should_stop, on_step) -> torch.Tensor:
    image = image.detach().clamp(0, 1)
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            raise RenderCancelled()
        dy, dx = (torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen) if cfg.jitter
                  else torch.zeros(2, dtype=torch.long)).tolist()
        rolled = torch.roll(image, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(energy(rolled), rolled)  # the image's gradient only
        step_ = cfg.lr * grad / grad.abs().mean().clamp_min(1e-8)
        image = torch.roll((rolled + step_).detach(), shifts=(-dy, -dx), dims=(2, 3)).clamp_(0, 1)
        on_step(step + 1)
    return image


def _scaled(x: torch.Tensor, factor: float) -> tuple[int, int]:
    h, w = x.shape[-2:]
    return max(1, round(h * factor)), max(1, round(w * factor))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
