"""The first layer's filters as pictures (Krizhevsky et al. 2012, Fig. 3: AlexNet's 96 learned 11×11
kernels, oriented edges and colour blobs). The first convolution is the one layer whose weights are
pictures themselves: each filter is a small RGB image that the network slides over the photo.

What is drawn is the filter on the photo's own pixels: the weights divided by the input
normalisation's spread (per colour), times the scale of the BatchNorm that follows (its sign can flip
a filter). Grey is zero, brighter a positive weight, darker a negative one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchvision.utils import make_grid

from tlcore import fold, zoo
from tlcore.zoo.arch import architecture

NEGLIGIBLE = 1e-3  # of the layer's largest weight
Scale = Literal["each", "shared"]  # each filter to its own largest weight, or all to the layer's


@dataclass(frozen=True)
class FirstLayer:
    path: str  # the convolution's module path
    kind: str  # "conv 3×3/2", as the layer table writes it
    kernels: np.ndarray  # N×k×k×3 float32: the convolution's own weights on the photo's 0–1 RGB values
    gain: np.ndarray  # (N,) the following BatchNorm's scale γ/σ per filter (ones without one)
    batchnorm: str | None  # the BatchNorm folded in, if one follows

    @property
    def weights(self) -> np.ndarray:
        """N×k×k×3: each filter as the layer applies it, its BatchNorm's scale included."""
        return self.kernels * self.gain[:, None, None, None]

    def images(self, scale: Scale = "each") -> np.ndarray:
        """N×k×k×3 uint8: grey (128) is zero; ``scale`` "each" stretches every filter to its own
        range (its pattern), "shared" uses the layer's largest weight (which filters are strong)."""
        if scale not in ("each", "shared"):
            raise ValueError(f"scale must be 'each' or 'shared', got {scale!r}")
        layer_peak = max(float(np.abs(self.weights).max()), 1e-12)
        peak = np.abs(self.weights).max(axis=(1, 2, 3), keepdims=True) if scale == "each" else layer_peak
        # A negligible filter is drawn on the layer's range: grey, as the page says, instead of its
        # rounding noise stretched to full contrast.
        peak = np.where(self.negligible()[:, None, None, None], layer_peak, peak)
        unit = self.weights / np.maximum(peak, 1e-12)
        return np.round(127.5 + 127.5 * unit).clip(0, 255).astype(np.uint8)

    def grid(self, scale: Scale = "each", tile_px: int = 56, per_row: int = 16) -> np.ndarray:
        """H×W×3 uint8: the filters as one picture, each enlarged without smoothing (a 3×3 filter is 9
        pixels) to about ``tile_px``, on a white grid."""
        tiles = torch.from_numpy(self.images(scale)).permute(0, 3, 1, 2)
        factor = max(1, tile_px // tiles.shape[-1])
        big = tiles.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        return make_grid(big, nrow=per_row, padding=4, pad_value=255).permute(1, 2, 0).numpy()

    def strength(self) -> np.ndarray:
        """(N,) each filter's L2 norm on the photo's pixels: a near-zero one barely fires."""
        return np.sqrt((self.weights**2).sum(axis=(1, 2, 3)))

    def negligible(self) -> np.ndarray:
        """(N,) bool: filters whose largest weight is under NEGLIGIBLE of the layer's largest. Weight decay
        drives unused ones there (4 of Lite0's 32 are below 1e-6 of it): their channel's output is the
        same whatever the photo."""
        peaks = np.abs(self.weights).max(axis=(1, 2, 3))
        return peaks < NEGLIGIBLE * peaks.max()


def first_layer(spec: zoo.ModelSpec, model: nn.Module) -> FirstLayer:
    """The first convolution that the forward pass runs on the RGB image (``model`` is only read).
    ValueError for a model whose first layer is not one (e.g. grouped, or not on three channels)."""
    row = next((r for r in architecture(spec) if r.kind.startswith("conv")), None)
    conv = model.get_submodule(row.name) if row else None
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{spec.model}'s first layer is not a convolution over the RGB image")
    weight = conv.weight.detach().float().cpu()
    gain = torch.ones(len(weight))
    bn_path = dict(fold._pair_paths(model)).get(row.name)
    if bn_path is not None:  # y = γ·(conv − μ)/σ_bn + β: each output channel scaled by γ/σ_bn
        bn = model.get_submodule(bn_path)
        gain = bn.weight.detach().float().cpu() / torch.sqrt(bn.running_var.detach().float().cpu() + bn.eps)
    # The model sees (x − mean)/std per colour: on the photo's pixels x, a weight counts w/std.
    # GoogLeNet's and Inception-v3's pretrained weights re-normalise their input to (x − 0.5)/0.5.
    std = (0.5, 0.5, 0.5) if getattr(model, "transform_input", False) else spec.std
    weight = weight / torch.tensor(std)[None, :, None, None]
    return FirstLayer(path=row.name, kind=row.kind, kernels=weight.permute(0, 2, 3, 1).numpy(), gain=gain.numpy(),
                      batchnorm=bn_path)


@dataclass(frozen=True)
class Change:
    """How fine-tuning changed the first layer, filter by filter (NaN where a filter was negligible)."""

    weights: np.ndarray  # (N,) ‖after − before‖ ÷ ‖before‖ of the convolution's own weights: what was learned
    gain: np.ndarray  # (N,) the BatchNorm's scale after ÷ before: its statistics re-estimated on the new data


def change(before: FirstLayer, after: FirstLayer) -> Change:
    """What fine-tuning did to the first layer. The first layer's filters are the most general
    (Yosinski et al. 2014): training usually moves them least. A BatchNorm whose statistics trained
    rescales every filter too, which is no change of pattern, so the two are apart."""
    if before.kernels.shape != after.kernels.shape:
        raise ValueError(f"the layers differ: {before.kernels.shape} against {after.kernels.shape}")
    live = ~before.negligible()
    norm = np.sqrt((before.kernels**2).sum(axis=(1, 2, 3)))
    moved = np.sqrt(((after.kernels - before.kernels) ** 2).sum(axis=(1, 2, 3)))
    ratio = after.gain / np.where(before.gain != 0, before.gain, np.nan)
    return Change(weights=np.where(live & (norm > 0), moved / np.where(norm > 0, norm, 1.0), np.nan),
                  gain=np.where(live, ratio, np.nan))
