"""Building architectures and loading pretrained weights through each library's own path."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode
from torchvision.models import get_model, regnet

from tlcore.choices import RESOLUTION_PX
from tlcore.zoo import facts, lite
from tlcore.zoo.blocks import block_list, depth, weight_layers
from tlcore.zoo.registry import weights_available
from tlcore.zoo.spec import Block, ModelSpec


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says what to do."""


def _lite_item(spec: ModelSpec) -> lite.LiteModel:
    return next(item for item in lite.LITE_MODELS if item.model == spec.model)


def build(spec: ModelSpec) -> nn.Module:
    """The architecture with random weights, on the current default device (no download)."""
    if spec.family == "efficientnet_lite":
        return lite.build(_lite_item(spec))
    return get_model(spec.model, weights=None, **dict(spec.arch_kwargs))


@contextlib.contextmanager
def _regnet_widths_on_cpu() -> Iterator[None]:
    # RegNet computes its stage widths with tensor ops and .tolist(), which a meta tensor
    # cannot answer; that arithmetic runs on the CPU while the layers go to meta.
    original = regnet.BlockParams.__dict__["from_init_params"]

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(on_cpu)
    try:
        yield
    finally:
        regnet.BlockParams.from_init_params = original


class _NoFillOnMeta(TorchFunctionMode):
    """Skips the in-place fills that weight initialisation makes (``nn.init`` and the models' own
    init loops) on meta tensors: they have no values to fill, yet each ``normal_`` there runs
    through Python decompositions (~1 ms). A function mode is thread-local, like the meta device
    mode itself, so a model another session builds meanwhile is initialised as usual."""

    FILLS = frozenset(
        [getattr(torch.Tensor, name) for name in ("normal_", "uniform_", "fill_", "zero_", "exponential_",
                                                  "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "copy_")]
        # nn.init's own functions reach a function mode under their own names
        + [getattr(nn.init, name) for name in ("normal_", "uniform_", "trunc_normal_", "constant_", "zeros_",
                                               "ones_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
                                               "xavier_uniform_", "orthogonal_") if hasattr(nn.init, name)])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_meta(spec: ModelSpec) -> nn.Module:
    """The architecture on the meta device: shapes only, no memory, no initialisation (the
    depth and block lists of 83 architectures: 1.3–1.7× faster on a 2-core CPU)."""
    with _regnet_widths_on_cpu(), torch.device("meta"), _NoFillOnMeta():
        return build(spec).eval()


def trace_on_meta(spec: ModelSpec, hooks: Callable[[nn.Module], list[tuple[nn.Module, Callable]]]) -> None:
    """One pass of ``spec``'s architecture on the meta device at the weights' crop size, with the
    forward hooks ``hooks(model)`` gives (module, hook) for the built model; removed afterwards."""
    model = build_meta(spec)
    handles = [module.register_forward_hook(hook) for module, hook in hooks(model)]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, spec.crop_size, spec.crop_size, device="meta"))
    finally:
        for h in handles:
            h.remove()


def load(spec: ModelSpec, *, device: torch.device | str = "cpu", pretrained: bool = True) -> nn.Module:
    """The model in eval mode on ``device``; pretrained via torchvision's download-and-cache path.

    Raises WeightsUnavailableError when the weights are not cached and cannot be fetched.
    """
    if not pretrained:
        model = build(spec)
    elif spec.family == "efficientnet_lite":
        try:
            model = lite.load_pretrained(_lite_item(spec))
        except FileNotFoundError as err:
            raise WeightsUnavailableError(f"{spec.key}: weights package missing — {err}") from err
    else:
        model = _load_torchvision(spec)
    return model.eval().to(device)


def _load_torchvision(spec: ModelSpec) -> nn.Module:
    weights = torchvision.models.get_model_weights(spec.model)[spec.weights]
    try:
        return get_model(spec.model, weights=weights)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        if weights_available(spec):
            raise  # a cached file that fails to load is a real error, not a missing download
        raise WeightsUnavailableError(
            f"{spec.key}: weights are not cached and could not be downloaded "
            f"({type(err).__name__}: {err}). Download {spec.weights_url} and save it as "
            f"{spec.weights_file} (set TORCH_HOME to use another cache folder)."
        ) from err


ARCH_INFO = "arch-info-v2"  # v2: "depth" became the longest path (it counted every weight layer)
SMALLEST_INPUT = "smallest-input"


def arch_key(spec: ModelSpec) -> str:
    """What tells architectures apart (weights do not)."""
    return f"{spec.model}|{dict(spec.arch_kwargs)}"


@functools.cache  # pages ask on every rerun; a spec is frozen and hashable
def arch_info(spec: ModelSpec) -> dict:
    """Depth and block list, from a meta-device build (shipped or cached on disk: ``facts``)."""
    return facts.fact(ARCH_INFO, arch_key(spec), lambda: work_out_arch_info(spec))


def work_out_arch_info(spec: ModelSpec) -> dict:
    model = build_meta(spec)
    return {"depth": depth(model), "weight_layers": weight_layers(model),
            "blocks": [asdict(b) for b in block_list(model, spec.family)]}


@functools.cache
def smallest_input(spec: ModelSpec) -> int:
    """The smallest square input, in px, at which ``spec``'s last convolution still gives a map of
    2×2 positions or more (from meta-device passes; shipped or cached on disk). Below it the network pools a
    single position and its pretrained features collapse: EfficientNet-Lite0's ImageNet head gave
    the chelsea photo a top probability of 0.02 at 32 px, 0.11 at 48 and 0.04 at 63, then 0.90 at
    64, its first size with a 2×2 map (its padding is fixed for 224 px); Lite2's features were all
    zero at 32 px, its last size with a 1×1 map, and it named the cat again at 48."""
    return facts.fact(SMALLEST_INPUT, arch_key(spec), lambda: work_out_smallest_input(spec))


def work_out_smallest_input(spec: ModelSpec) -> int:
    model = build_meta(spec)
    lo, hi = RESOLUTION_PX  # the sizes a dataset may have
    if _last_map(model, hi) < 2:
        return lo  # no size in range gives two positions (or none is taken): nothing to enforce
    while lo < hi:  # the map grows with the input: bisect for the first size where it is 2×2
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _last_map(model, mid) >= 2 else (mid + 1, hi)
    return lo


def _last_map(model: nn.Module, size: int) -> int:
    """The smaller side of the map the last convolution run gives a ``size``-px input (0 where the
    network cannot take that size)."""
    shapes = []
    handles = [m.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
    except (RuntimeError, ValueError, AssertionError):  # too small for a pooling window, a fixed input size
        return 0
    finally:
        for h in handles:
            h.remove()
    return min(shapes[-1][-2:]) if shapes else 0


@functools.cache
def blocks_of(spec: ModelSpec) -> tuple[Block, ...]:
    """The freezable blocks of ``spec``'s architecture, in forward order."""
    return tuple(Block(b["name"], tuple(b["members"]), b["params"]) for b in arch_info(spec)["blocks"])
