"""A frozen model with its BatchNorm layers folded into the convolutions before them, for renders
and dreams in float32 (on a CPU; see ``folded``): they run the model in eval mode hundreds of times forward and back to the image, and
an eval-mode BatchNorm is an affine map that a convolution can absorb. On the 2-core VM a
BatchNorm's forward and backward took a quarter of a Lite0 render's time in the profiler; folded,
a gallery of 8 channels of ``_blocks.8`` (64 steps, 96 px) rendered 1.52× as fast, its median
activation ratio 7.42 against 7.43 (bench/vis_speed.py --fold).

Pairs are a Conv2d and the BatchNorm2d registered right after it in the same parent (torchvision's
conv-bn-act blocks, EfficientNet-Lite's blocks). Registration order is not forward order in every
model, so the folded copy is used only when its output matches the model's on a probe input;
otherwise the model itself serves. A layer that is read (its output, or its input) is never part
of a fold.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from tlcore.hooks import private_copy

# model → {layers kept: its folded copy (or the model itself when folding does not hold)}; a few
# entries each, gone with the model (a fine-tuned run's model is dropped from the app's cache).
_FOLDED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], nn.Module]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_PER_MODEL = 4


def folded(model: nn.Module, keep: Iterable[str] = (), dtype: torch.dtype | None = None) -> nn.Module:
    """``model`` (in eval mode, read only) with each BatchNorm2d that follows a Conv2d folded into
    it, except pairs with a module in ``keep`` (module paths whose output or input is read); cached
    per model. ``dtype``: the autocast dtype the pass runs in. Only a float32 pass (None) is folded:
    in bf16 the folded weights' rounding took Lite0's penultimate features further from float32's
    (relative error 1.1e-1 against 7.9e-2 unfolded, 96 px textures), so there the model serves."""
    if dtype is not None:
        return model
    key = tuple(sorted(keep))
    with _LOCK:
        found = _FOLDED.get(model, {}).get(key)
    if found is not None:
        return found
    made = _fold_checked(model, key)
    with _LOCK:
        entries = _FOLDED.setdefault(model, {})
        if len(entries) >= _PER_MODEL:
            entries.pop(next(iter(entries)))
        entries[key] = made
    return made


def _pairs(model: nn.Module, keep: tuple[str, ...]) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv's name, bn's name) for each Conv2d directly followed by a BatchNorm2d."""
    out = []
    for path, parent in model.named_modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
            read = {f"{path}.{name}" if path else name for name in (conv_name, bn_name)} & set(keep)
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and conv.out_channels == bn.num_features and not read):
                out.append((parent, conv_name, bn_name))
    return out


def _fold_checked(model: nn.Module, keep: tuple[str, ...]) -> nn.Module:
    if not _pairs(model, keep):
        return model
    copy = private_copy(model).eval()
    for parent, conv_name, bn_name in _pairs(copy, keep):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        setattr(parent, bn_name, nn.Identity())
    copy.requires_grad_(False)
    return copy if _same_output(model, copy) else model


@torch.no_grad()
def _same_output(model: nn.Module, copy: nn.Module, size: int = 96) -> bool:
    """Whether both give the same output (to float32 rounding) on one random image: folding a conv
    into a BatchNorm that does not follow it would not."""
    param = next(model.parameters())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(param.device)
    try:
        a, b = model(x), copy(x)
    except RuntimeError:  # an input too small for the model: no check, no fold
        return False
    a, b = (getattr(t, "logits", t).float() for t in (a, b))
    return bool((a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-5)
