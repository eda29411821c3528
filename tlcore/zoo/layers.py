"""The layers a person can look inside: module paths whose output is a convolutional feature map.

Names are ``named_modules()`` paths, so any torch hook can use them. The list walks the zoo's
block list: each block's member modules, or, for a member that is a container of blocks, its
children instead (ResNet's ``layer2`` → ``layer2.0``, ``layer2.1``: the container's output is its
last child's; a conv-bn-act triple is not opened), kept where the module's output is an
N×C×H×W map larger than 1×1 and the module runs once per pass (a module shared by two places,
like EfficientNet-Lite's one activation, would be ambiguous). Shapes come from one forward
pass on the meta device at the weights' crop size: no memory, no download.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tlcore.zoo import facts
from tlcore.zoo.loading import arch_key, blocks_of
from tlcore.zoo.spec import ModelSpec

# Families not offered for visualisation: maps that are not N×C×H×W (ViT's tokens; Swin keeps
# channels last) or an input size fixed by window partitioning (MaxViT), which renders cannot keep.
NO_CHANNEL_MAPS = ("vit", "swin", "swin_v2", "maxvit")


KIND = "layers-v2"  # v2: the selection rule above; a new rule is a new name (``facts``)


@dataclass(frozen=True)
class Layer:
    name: str  # module path
    block: str  # the freezable block it belongs to
    channels: int
    size: int  # spatial side at the weights' crop size


def _holds_blocks(module: nn.Module) -> bool:
    """A container of blocks (ResNet's layer2), not of plain layers (a conv-bn-act triple)."""
    return any(any(True for _ in child.children()) for child in module.children())


def _candidates(model: nn.Module, spec: ModelSpec) -> list[tuple[str, str]]:
    out = []
    for block in blocks_of(spec):
        for path in block.members:
            try:
                module = model.get_submodule(path)
            except AttributeError:  # a bare parameter (ViT's class token)
                continue
            if isinstance(module, (nn.Sequential, nn.ModuleList)) and _holds_blocks(module):
                out += [(f"{path}.{child}", block.name) for child, _ in module.named_children()]
            else:
                out.append((path, block.name))
    return out


def layers_key(spec: ModelSpec) -> str:
    return f"{arch_key(spec)}|{spec.crop_size}"


def work_out_layers(spec: ModelSpec) -> list[dict]:
    from tlcore.zoo.loading import trace_on_meta

    candidates: list[tuple[str, str]] = []
    shapes: dict[str, list[tuple[int, ...]]] = {}

    def hook_for(path: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                shapes.setdefault(path, []).append(tuple(output.shape))
        return hook

    def hooks(model: nn.Module) -> list:
        candidates.extend(_candidates(model, spec))
        return [(model.get_submodule(p), hook_for(p)) for p, _ in candidates]

    trace_on_meta(spec, hooks)
    rows = []
    for path, block in candidates:
        seen = shapes.get(path, [])
        if len(seen) == 1 and len(seen[0]) == 4 and seen[0][2] > 1:
            rows.append(asdict(Layer(path, block, seen[0][1], seen[0][2])))
    return rows


@functools.cache
def layers(spec: ModelSpec) -> tuple[Layer, ...]:
    """The visualisable layers of ``spec``'s architecture in forward order (empty for models
    without channel maps). Shipped or cached on disk per torchvision version (``facts``), and in memory."""
    if spec.family in NO_CHANNEL_MAPS:
        return ()
    rows = facts.fact(KIND, layers_key(spec), lambda: work_out_layers(spec))
    return tuple(Layer(**r) for r in rows)


def middle_layer(spec: ModelSpec) -> str:
    """The middle of the network — patterns and textures, the most telling first view: where the
    Inside-the-network page and ``tlcore vis`` start."""
    names = [layer.name for layer in layers(spec)]
    if not names:
        raise ValueError(f"{spec.model} has no channel maps to look at")
    return names[len(names) // 2]
