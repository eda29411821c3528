"""The block list a freeze slider walks over: named stages in forward order.

One generic rule over the module tree, plus a few family overrides:

* top-level children in registration order (torchvision registers them in forward order),
  with known trunk containers (``features``, ``layers``, ``trunk_output``, ``blocks``,
  ``_blocks``) expanded into their children;
* runs of plain layers (conv/bn/linear with no submodules) form one block, so ResNet's
  ``conv1, bn1, relu, maxpool`` is the stem and ``avgpool, fc`` the head;
* parameter-free modules (ReLU, pooling, dropout) join the block before them, and a
  non-adaptive pooling layer closes its block — VGG's conv stages end at each pool;
* the last block is called ``head`` and holds the classifier.

Tests check, for every model in the registry, that each parameter lies in exactly one
block and that blocks run in forward order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import fx, nn

from tlcore.zoo.spec import Block

TRUNKS = ("features", "layers", "trunk_output", "blocks", "_blocks")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)

Unit = tuple[str, nn.Module | None]  # (path, module) — module None for a bare parameter


def _n_params(model: nn.Module, path: str) -> int:
    try:
        return sum(p.numel() for p in model.get_submodule(path).parameters())
    except AttributeError:  # a bare parameter such as ViT's class_token
        return model.get_parameter(path).numel()


def _is_leaf(module: nn.Module | None) -> bool:
    return module is None or not any(True for _ in module.children())


def _has_params(module: nn.Module | None) -> bool:
    return module is None or any(True for _ in module.parameters())


def _units(model: nn.Module, trunks: tuple[str, ...] = TRUNKS) -> list[Unit]:
    units: list[Unit] = [(name, None) for name, _ in model.named_parameters(recurse=False)]
    for name, child in model.named_children():
        if name in trunks and isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [(f"{name}.{sub}", mod) for sub, mod in child.named_children()]
        else:
            units.append((name, child))
    return units


def _group(units: list[Unit]) -> list[list[Unit]]:
    groups: list[list[Unit]] = []
    closed = True  # the last group takes no more members
    leaf_run = False  # the last group is a run of plain layers
    for path, module in units:
        if groups and not closed and not _has_params(module):
            groups[-1].append((path, module))  # ReLU / pool / dropout join the block before
            closed = isinstance(module, _POOLS)
        elif groups and not closed and leaf_run and _is_leaf(module):
            groups[-1].append((path, module))
        else:
            groups.append([(path, module)])
            leaf_run, closed = _is_leaf(module), isinstance(module, _POOLS)
    return _merge_empty(groups)


def _merge_empty(groups: list[list[Unit]]) -> list[list[Unit]]:
    """A group with no parameters (a lone avgpool) joins the group after it."""
    out: list[list[Unit]] = []
    pending: list[Unit] = []
    for group in groups:
        if not any(_has_params(m) for _, m in group):
            pending += group
            continue
        out.append(pending + group)
        pending = []
    if pending and out:
        out[-1] += pending
    return out


def _name(group: list[Unit], index: int, total: int) -> str:
    if index == total - 1:
        return "head"
    # Trailing ReLU / adaptive pooling do not name a block; a stage-closing max-pool does.
    paths = [p for p, m in group if _has_params(m) or isinstance(m, _POOLS)] or [group[0][0]]
    if index == 0 and (len(paths) > 1 or _is_leaf(group[0][1])):
        return "stem"
    if len(paths) == 1:
        return paths[0]
    first, last = paths[0], paths[-1]
    prefix = first.rsplit(".", 1)[0] + "." if "." in first else ""
    return f"{first}-{last[len(prefix):]}" if last.startswith(prefix) else f"{first}-{last}"


def _by_patterns(model: nn.Module, patterns: list[tuple[str, str]]) -> dict[str, list[Unit]]:
    """Group top-level units by the first regex each path matches (family overrides)."""
    groups: dict[str, list[Unit]] = {}
    for path, module in _units(model, trunks=()):
        label = next((lab for lab, rx in patterns if re.fullmatch(rx, path)), None)
        if label is None:
            raise ValueError(f"block pattern missing for {path!r}")
        groups.setdefault(label, []).append((path, module))
    return groups


def _vit_groups(model: nn.Module) -> list[list[Unit]]:
    enc = model.get_submodule("encoder")
    stem: list[Unit] = [(n, None) for n, _ in model.named_parameters(recurse=False)]
    stem += [("conv_proj", model.conv_proj), ("encoder.pos_embedding", None),
             ("encoder.dropout", enc.dropout)]
    layers = [[(f"encoder.layers.{n}", m)] for n, m in enc.layers.named_children()]
    head: list[Unit] = [("encoder.ln", enc.ln), ("heads", model.heads)]
    return [stem, *layers, head]


def _lite_groups(model: nn.Module) -> list[list[Unit]]:
    # EfficientNet-Lite keeps all MBConv blocks in one flat list; a stage is a run with the
    # same output width, as in the paper's Table 1.
    stages: list[list[Unit]] = []
    width = None
    for i, blk in enumerate(model._blocks):
        out = blk._block_args.output_filters
        if out != width:
            stages.append([])
            width = out
        stages[-1].append((f"_blocks.{i}", blk))
    # The one activation module is shared by stem and head; it is first used in the stem.
    stem: list[Unit] = [("_conv_stem", model._conv_stem), ("_bn0", model._bn0), ("_swish", model._swish)]
    head = [(n, m) for n, m in model.named_children() if n not in ("_conv_stem", "_bn0", "_swish", "_blocks")]
    return [stem, *stages, head]


_GOOGLENET = [("stem", r"conv\d|maxpool[12]"), ("inception3", r"inception3.|maxpool3"),
              ("inception4", r"inception4.|maxpool4"), ("inception5", r"inception5."),
              ("head", r"aux\d|avgpool|dropout|fc")]
# Inception's auxiliary classifier hangs off Mixed_6e, so it trains with that stage.
_INCEPTION = [("stem", r"Conv2d_.*|maxpool\d"), ("mixed5", r"Mixed_5."),
              ("mixed6", r"Mixed_6.|AuxLogits"), ("mixed7", r"Mixed_7."), ("head", r"avgpool|dropout|fc")]
_DENSENET = [("stem", r"features\.(conv0|norm0|relu0|pool0)"),
             *[(f"denseblock{i}", rf"features\.(denseblock{i}|transition{i})") for i in range(1, 5)],
             ("head", r"features\.norm5|classifier")]


def _densenet_groups(model: nn.Module) -> dict[str, list[Unit]]:
    units = _units(model)
    return {label: [u for u in units if re.fullmatch(rx, u[0])] for label, rx in _DENSENET}


Groups = list[list[Unit]] | dict[str, list[Unit]]  # a dict names its groups

_OVERRIDES: dict[str, Callable[[nn.Module], Groups]] = {
    "vit": _vit_groups,
    "efficientnet_lite": _lite_groups,
    "googlenet": lambda m: _by_patterns(m, _GOOGLENET),
    "inception": lambda m: _by_patterns(m, _INCEPTION),
    "densenet": _densenet_groups,
}


def block_list(model: nn.Module, family: str) -> tuple[Block, ...]:
    """The freezable blocks of ``model`` in forward order (see module docstring)."""
    groups = _OVERRIDES[family](model) if family in _OVERRIDES else _group(_units(model))
    if isinstance(groups, dict):
        named = [(label, g) for label, g in groups.items() if g]
    else:
        named = [(_name(g, i, len(groups)), g) for i, g in enumerate(groups)]
    return tuple(
        Block("head" if i == len(named) - 1 else label, tuple(p for p, _ in g),
              sum(_n_params(model, p) for p, _ in g))
        for i, (label, g) in enumerate(named)
    )


_WEIGHTED = (nn.Conv2d, nn.Linear)


def weight_layers(model: nn.Module) -> int:
    """Every convolution and linear layer in the network, parallel branches and shortcuts included."""
    return sum(isinstance(m, _WEIGHTED) for m in model.modules())


class _WeightLayersAsLeaves(fx.Tracer):
    """Keeps a convolution a node of the graph even where a library subclasses it (the Lite models'
    static "same" padding), so it can be counted."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _WEIGHTED) or super().is_leaf_module(m, qualname)


def depth(model: nn.Module) -> int:
    """Weight layers on the longest path from input to output: the papers' sense of 'ResNet-50'
    or 'GoogLeNet's 22 layers' (a 1×1 projection shortcut or a parallel branch does not add to it).
    From torch.fx's graph of the forward pass; where that cannot be traced, ``weight_layers``."""
    try:
        graph = _WeightLayersAsLeaves().trace(model)
    except Exception:  # noqa: BLE001 — fx refuses data-dependent control flow in some forwards
        return weight_layers(model)
    modules = dict(model.named_modules())
    longest: dict[fx.Node, int] = {}
    for node in graph.nodes:  # topological order: every input is counted before its users
        weighted = node.op == "call_module" and isinstance(modules.get(node.target), _WEIGHTED)
        longest[node] = max((longest[n] for n in node.all_input_nodes), default=0) + weighted
    return longest[graph.find_nodes(op="output")[0]]
