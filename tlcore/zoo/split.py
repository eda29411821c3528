"""Cut a model in two at a block boundary, so a frozen prefix can run once and be cached.

torchvision's feature-extraction tracer (torch.fx) gives the model's graph with module-path
node names; the cut is made just before the first node of the first trainable block. The split
is accepted only when nothing but the boundary tensor flows across the cut (a batch size read
from the input is re-read from the boundary tensor); otherwise ``split`` returns None and the
caller runs the whole model, frozen part under no_grad.

Tracing is four symbolic traces of the model, pure Python that a trial paid every time, on a GPU
too (EfficientNet-Lite0 on the 2-core VM: a trial's setup 0.25 s with it, 0.05 s without); given
the ``architecture`` (``ModelSpec.architecture``), the traced graph is kept for it, and each split
builds its two modules from it over the given model's own modules. The tracer writes numbers read
from plain attributes into the graph (groups, normalised shapes, heads), so the key is the spec's
architecture, not the module classes (Lite1 and Lite2 have the same classes at the same paths).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable

import torch
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from tlcore.zoo.spec import Block


def _belongs(name: str, members: set[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in members)


def split(model: nn.Module, blocks: tuple[Block, ...], n_frozen: int, *,
          architecture: Hashable | None = None) -> tuple[nn.Module, nn.Module] | None:
    """(prefix, tail) with tail(prefix(x)) == model(x), cut before ``blocks[n_frozen]``.
    ``architecture``: what built ``model`` (``ModelSpec.architecture``), so its graph is traced once."""
    if not 0 < n_frozen < len(blocks):
        return None
    graph = _graph_of(model, architecture)
    if graph is None:
        return None
    later = {m for b in blocks[n_frozen:] for m in b.members}
    order = list(graph.nodes)
    # fx sanitises node names ("layer3_0_conv1"); module calls and parameter reads keep the
    # qualified path in their target.
    first = next((i for i, n in enumerate(order)
                  if n.op in ("call_module", "get_attr") and _belongs(str(n.target), later)), None)
    if first is None or first == 0:
        return None
    boundary = order[first - 1]
    if boundary.op == "placeholder":
        return None
    return _build(model, order, first, boundary)


_GRAPHS: dict[Hashable, fx.Graph] = {}  # architecture → its inference graph (read only, unowned)
_GRAPHS_LOCK = threading.Lock()


def _graph_of(model: nn.Module, architecture: Hashable | None) -> fx.Graph | None:
    """The model's traced inference graph (None: untraceable). Kept for ``architecture`` only when
    it reads nothing but the model's parameters and buffers: a constant the tracer made lives on
    the traced model alone, so the graph could not be rebuilt over another copy."""
    if architecture is not None:
        with _GRAPHS_LOCK:
            if architecture in _GRAPHS:
                return _GRAPHS[architecture]
    graph = _trace(model)
    if graph is not None and architecture is not None:
        tensors = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        if all(str(n.target) in tensors for n in graph.nodes if n.op == "get_attr"):
            with _GRAPHS_LOCK:
                _GRAPHS[architecture] = _unowned_copy(graph)
    return graph


def _unowned_copy(graph: fx.Graph) -> fx.Graph:
    """The graph's nodes in a new graph: the traced one belongs to a module that holds the first
    model's parameters (a whole model kept alive on the GPU per architecture)."""
    copy = fx.Graph()
    copy.output(copy.graph_copy(graph, {}))
    return copy


# Convolutions stay modules in the graph, subclasses too (EfficientNet-Lite's same-padding ones
# would be traced into a functional conv2d reading the module's weight): a frozen prefix's
# BatchNorms can then be folded into them (tlcore.fold), which needs conv and BatchNorm as modules.
_LEAVES = {"leaf_modules": [nn.Conv2d]}


def _trace(model: nn.Module) -> fx.Graph | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            was_training = model.training
            model.eval()  # trace the inference graph (no auxiliary heads)
            try:
                _, nodes = get_graph_node_names(model, tracer_kwargs=_LEAVES)
                return create_feature_extractor(model, return_nodes={nodes[-1]: "out"}, tracer_kwargs=_LEAVES).graph
            finally:
                model.train(was_training)
    except Exception:  # an untraceable architecture: the caller falls back
        return None


def _build(root: nn.Module, order: list[fx.Node], first: int, boundary: fx.Node):
    before = set(order[:first])
    source = order[0]  # the input placeholder
    tail = fx.Graph()
    x = tail.placeholder("boundary")
    env: dict[fx.Node, fx.Node] = {boundary: x}

    def lookup(node: fx.Node) -> fx.Node:
        if node in env:
            return env[node]
        if node.op == "get_attr":  # parameters/buffers: copy the access
            env[node] = tail.get_attr(node.target)
            return env[node]
        if node.op == "call_method" and node.target == "size" and node.args[0] is source \
                and len(node.args) > 1 and node.args[1] == 0:
            env[node] = tail.call_method("size", (x, 0))  # the batch size, read from the boundary
            return env[node]
        if node in before:
            raise _Crossing(node.name)
        raise KeyError(node.name)

    try:
        for node in order[first:]:
            if node.op == "output":
                tail.output(fx.map_arg(node.args[0], lookup)["out"])
                break
            env[node] = tail.node_copy(node, lookup)
    except _Crossing:
        return None
    prefix_graph = fx.Graph()
    penv: dict[fx.Node, fx.Node] = {}
    for node in order[:first]:
        penv[node] = prefix_graph.node_copy(node, lambda n: penv[n])
    prefix_graph.output(penv[boundary])
    prefix = fx.GraphModule(root, prefix_graph)
    tail_module = fx.GraphModule(root, tail)
    prefix.graph.eliminate_dead_code()
    prefix.recompile()
    return prefix, tail_module


class _Crossing(Exception):
    """A tensor other than the boundary is needed after the cut."""


@torch.no_grad()
def check(model: nn.Module, prefix: nn.Module, tail: nn.Module, x: torch.Tensor) -> bool:
    """True when tail(prefix(x)) reproduces model(x) (eval mode)."""
    model.eval()
    return torch.allclose(model(x), tail(prefix(x)), atol=1e-4, rtol=1e-3)
