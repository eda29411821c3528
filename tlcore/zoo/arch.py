"""A network's layers as the papers tabulate them (VGG's configurations A–E, GoogLeNet's Table 1,
the ZF-net table in the course's slides): each convolution, linear layer and pooling in forward
order, with its kernel and stride, output shape, parameters and multiply-adds per image.

From one forward pass on the meta device at the weights' crop size: no memory, no download.
Multiply-adds count convolutions and linear layers, as torchvision's GFLOPs metadata does, so
their sum is that figure for a convolutional network (attention's own products are not here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tlcore.zoo.spec import ModelSpec

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
TABULATED = (nn.Conv2d, nn.Linear, *_POOLS)


@dataclass(frozen=True)
class ArchRow:
    name: str  # module path
    kind: str  # "conv 3×3/2", "linear", "max pool 3×3/2", …
    in_channels: int
    out_channels: int
    out_size: str  # "112×112", or "—" for a vector
    params: int  # the layer's own weights and biases
    macs: int  # multiply-adds per image


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride)
        groups = "" if module.groups == 1 else (" depthwise" if module.groups == module.in_channels
                                                else f" groups {module.groups}")
        return f"conv {kh}×{kw}/{sh if sh == sw else f'{sh}×{sw}'}{groups}"
    if isinstance(module, nn.Linear):
        return "linear"
    pool = "max" if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) else "avg"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return f"adaptive {pool} pool"
    (kh, kw), (sh, _) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    return f"{pool} pool {kh}×{kw}/{sh}"


# Per layer and per call, in forward order, hence counted here: torch's FlopCounterMode (what
# ``zoo.macs`` uses for a whole model) sums by module path, a module run twice as one entry.
def _row(name: str, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> ArchRow:
    per_image = out[0].numel()  # the pass runs one image
    if isinstance(module, nn.Conv2d):
        kh, kw = _pair(module.kernel_size)
        macs = per_image * (module.in_channels // module.groups) * kh * kw
        channels = (module.in_channels, module.out_channels)
    elif isinstance(module, nn.Linear):
        macs, channels = per_image * module.in_features, (module.in_features, module.out_features)
    else:
        macs, channels = 0, (x.shape[1], out.shape[1])
    size = f"{out.shape[-2]}×{out.shape[-1]}" if out.dim() == 4 else "—"
    params = sum(p.numel() for p in module.parameters(recurse=False))
    return ArchRow(name, _kind(module), int(channels[0]), int(channels[1]), size, int(params), int(macs))


def architecture(spec: ModelSpec) -> list[ArchRow]:
    """Every convolution, linear layer and pooling of ``spec``'s architecture, in the order the
    forward pass runs them (a module run twice is listed twice)."""
    from tlcore.zoo.loading import trace_on_meta

    rows: list[ArchRow] = []

    def record(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
                rows.append(_row(name, module, args[0], output))
        return hook

    trace_on_meta(spec, lambda model: [(m, record(n)) for n, m in model.named_modules() if isinstance(m, TABULATED)])
    return rows
