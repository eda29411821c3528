"""A network's layers as the papers tabulate them (VGG's configurations A–E, GoogLeNet's Table 1,
the ZF-net table in the course's slides): each convolution, linear layer and pooling in forward
order, with its kernel and stride, output shape, parameters and multiply-adds per image; or one row
per module (an Inception module, a residual block), as GoogLeNet's Table 1 has it.

From one forward pass on the meta device at the weights' crop size: no memory, no download.
Multiply-adds count convolutions and linear layers, as torchvision's GFLOPs metadata does, so
their sum is that figure for a convolutional network (attention's own products are not here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from tlcore.zoo.blocks import depth
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
    if out.dim() == 4:  # a linear layer on a map keeps channels last (Swin's): N×H×W×C
        size = f"{out.shape[1]}×{out.shape[2]}" if isinstance(module, nn.Linear) else f"{out.shape[-2]}×{out.shape[-1]}"
    else:
        size = f"{out.shape[1]} tokens" if out.dim() == 3 else "—"  # ViT's N×tokens×C
    params = sum(p.numel() for p in module.parameters(recurse=False))
    return ArchRow(name, _kind(module), int(channels[0]), int(channels[1]), size, int(params), int(macs))


def architecture(spec: ModelSpec) -> list[ArchRow]:
    """Every convolution, linear layer and pooling of ``spec``'s architecture, in the order the
    forward pass runs them (a module run twice is listed twice)."""
    from tlcore.zoo.loading import trace_on_meta

    rows: list[ArchRow] = []
    trace_on_meta(spec, lambda model: _layer_hooks(model, rows))
    return rows


def _layer_hooks(model: nn.Module, rows: list[ArchRow]) -> list:
    """(module, hook) for each tabulated layer, each appending its ``ArchRow`` to ``rows`` as it runs."""
    def record(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
                rows.append(_row(name, module, args[0], output))
        return hook

    return [(m, record(n)) for n, m in model.named_modules() if isinstance(m, TABULATED)]


@dataclass(frozen=True)
class ModuleRow:
    name: str  # module path
    kind: str  # the layer's kind for a module that is one layer, else its class ("Inception")
    out_channels: int
    out_size: str
    depth: int  # weight layers on its longest path (Table 1's "depth": 2 for an Inception module)
    layers: str  # its convolutions and linear layers, part by part: "branch2: 1×1 96 → 3×3 128"
    params: int  # all of its parameters (BatchNorm's included)
    macs: int  # multiply-adds per image


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _module_paths(model: nn.Module, members: list[str]) -> list[str]:
    """The model's parts, opening containers and any module that holds a freezable block's member
    (``members``: a row stays within one block): VGG's ``features`` → its layers, ResNet's
    ``layer1`` → its blocks, ViT's ``encoder`` → its encoder layers, GoogLeNet → conv1 …
    inception3a … fc. (torchvision's conv-norm-activation triple is a Sequential, so it opens to
    its convolution: one layer, one row.)"""
    paths: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            holds_member = any(m.startswith(path + ".") for m in members)
            if (isinstance(child, _CONTAINERS) or holds_member) and any(True for _ in child.children()):
                visit(path + ".", child)
            else:
                paths.append(path)

    visit("", model)
    return paths


def _short(kind: str) -> str:
    """"conv 3×3/1" → "3×3", "conv 3×3/1 depthwise" → "3×3 depthwise", "max pool 3×3/1" → "max pool 3×3"."""
    return re.sub(r"/1\b", "", kind.removeprefix("conv "))


def _parts(name: str, rows: list[ArchRow]) -> str:
    """What a module holds, part by part in forward order: 'branch1: 1×1 64 · branch2: 1×1 96 → 3×3 128'."""
    if len(rows) == 1:
        return ""
    parts: dict[str, list[str]] = {}
    for r in rows:
        part = r.name[len(name) + 1:].split(".")[0]
        step = _short(r.kind) if not r.kind.startswith(("conv", "linear")) else f"{_short(r.kind)} {r.out_channels}"
        parts.setdefault(part, []).append(step)
    if len(parts) == 1:  # one part (MobileNet's "block"): its name says nothing
        return " → ".join(next(iter(parts.values())))
    return " · ".join(f"{part}: {' → '.join(steps)}" for part, steps in parts.items())


def _shape_text(shape: tuple[int, ...], channels: int) -> tuple[int, str]:
    """(channels, spatial size) of a module's output: N×C×H×W; N×H×W×C where the module keeps
    channels last (Swin's blocks; ``channels`` is its last layer's width); N×tokens×C (ViT)."""
    if len(shape) == 4 and shape[-1] == channels != shape[1]:
        return shape[-1], f"{shape[1]}×{shape[2]}"
    if len(shape) == 4:
        return shape[1], f"{shape[2]}×{shape[3]}"
    if len(shape) == 3:
        return shape[-1], f"{shape[1]} tokens"
    return (shape[-1] if len(shape) > 1 else 0), "—"


def modules(spec: ModelSpec) -> list[ModuleRow]:
    """``architecture`` one row per module: its output, depth, parts, parameters and multiply-adds
    (modules that hold no tabulated layer, such as activations and dropout, are left out; so are
    those the evaluation pass never runs, like GoogLeNet's auxiliary classifiers)."""
    from tlcore.zoo.loading import blocks_of, trace_on_meta

    members = [m for b in blocks_of(spec) for m in b.members]
    outputs: dict[str, tuple[int, ...]] = {}
    layers: list[ArchRow] = []
    built: list[nn.Module] = []

    def keep_output(path: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                outputs.setdefault(path, tuple(output.shape))
        return hook

    def hooks(model: nn.Module) -> list:
        built.append(model)
        parts = [(model.get_submodule(p), keep_output(p)) for p in _module_paths(model, members)]
        return parts + _layer_hooks(model, layers)

    trace_on_meta(spec, hooks)
    model = built[0]
    out = []
    for path in outputs:  # the parts are disjoint, so the order their outputs came in is forward order
        mine = [r for r in layers if _inside(r.name, path)]
        if not mine:
            continue
        module, single = model.get_submodule(path), len(mine) == 1
        channels, size = _shape_text(outputs[path], mine[-1].out_channels)
        out.append(ModuleRow(
            path, mine[0].kind if single else type(module).__name__, int(channels), size,
            depth(module) if not single else int(mine[0].kind.startswith(("conv", "linear"))),
            _parts(path, mine), sum(p.numel() for p in module.parameters()), sum(r.macs for r in mine)))
    return out


def _inside(layer: str, module: str) -> bool:
    return layer == module or layer.startswith(module + ".")
