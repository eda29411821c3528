"""A frozen model with its BatchNorm layers folded into the convolutions before them, for passes
that run in float32 (see ``folded``): renders and dreams (on a CPU), feature passes and a trial's
frozen prefix (on a CPU without AMX, or a trial set to float32). An eval-mode BatchNorm is an
affine map that a convolution can absorb. On the 2-core VM a BatchNorm's forward and backward took
a quarter of a Lite0 render's time in the profiler; folded, a gallery of 8 channels of ``_blocks.8``
(64 steps, 96 px) rendered 1.52× as fast, its median activation ratio 7.42 against 7.43
(bench/vis_speed.py --fold); a feature pass ran 1.03–1.24× as fast, a trial with the last block
trainable 1.00–1.19× (bench/fold_speed.py).

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

from tlcore.hooks import copied_hooks, private_copy

# model → {(pairs kept, its hooks): its folded copy, or _AS_IS where folding does not hold}; a few
# entries each, gone with the model (a fine-tuned run's model is dropped from the app's cache; a
# trial's prefix with the trial). Never the model itself as a value: it would keep its own key alive.
_FOLDED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module | None]] = weakref.WeakKeyDictionary()
_AS_IS = None
_LOCK = threading.Lock()
_PER_MODEL = 4
# Larger models are used as they are: a copy doubles their memory (RegNetY-128GF: 2.6 GB more) for
# little, as convolutions outweigh BatchNorms the more the larger the model (ResNet-18's features
# 1.03×, bench/fold_speed.py). EfficientNet-B7, 266 MB, is the largest that still folds.
MAX_BYTES = 300 * 2**20


def folded(model: nn.Module, keep: Iterable[str] = (), dtype: torch.dtype | None = None) -> nn.Module:
    """``model`` (in eval mode, read only) with each BatchNorm2d that follows a Conv2d folded into
    it, except pairs with a module in ``keep`` (module paths whose output or input is read); cached
    per model. ``dtype``: the autocast dtype the pass runs in. Only a float32 pass (None) on a CPU
    is folded: in bf16 the folded weights' rounding took Lite0's penultimate features further from
    float32's (relative error 1.1e-1 against 7.9e-2 unfolded, 96 px textures); a GPU's float32
    convolutions run in TF32 by default, whose rounding the probe check (``_same_output``) would
    take for a wrong fold. Elsewhere the model serves as it is."""
    param = next(model.parameters(), None)
    if (dtype is not None or param is None or param.device.type != "cpu"
            or sum(p.numel() * p.element_size() for p in model.parameters()) > MAX_BYTES):
        return model
    # Keyed by the pairs kept, not the layers read: a block read as a layer keeps no pair, so every
    # block of a model shares one copy (a copy per layer cost a model's memory and a probe each).
    # And by the hooks a copy carries: one registered on the model since must run on it too.
    pairs = _pair_paths(model)
    kept = tuple(sorted(set(keep) & {path for pair in pairs for path in pair}))
    key = (kept, copied_hooks(model))
    with _LOCK:
        entries = _FOLDED.get(model, {})
        if key in entries:
            found = entries[key]
            return model if found is _AS_IS else found
    with torch.inference_mode(False):  # a copy made in inference mode could never serve a render's backward
        made = _fold_checked(model, [pair for pair in pairs if not set(pair) & set(kept)])
    with _LOCK:
        entries = _FOLDED.setdefault(model, {})
        if len(entries) >= _PER_MODEL:
            entries.pop(next(iter(entries)))
        entries[key] = _AS_IS if made is model else made
    return made


def _pair_paths(model: nn.Module) -> list[tuple[str, str]]:
    """(conv's path, bn's path) for each Conv2d directly followed by a BatchNorm2d it feeds."""
    out = []
    for path, parent in model.named_modules():
        prefix = f"{path}." if path else ""
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(parent.named_children()):
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and conv.out_channels == bn.num_features):
                out.append((prefix + conv_name, prefix + bn_name))
    return out


def _fold_checked(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy with ``pairs`` folded when it computes what the model does, else the model."""
    if not pairs:
        return model
    copy = private_copy(model).eval()
    for conv_path, bn_path in pairs:
        conv, bn = copy.get_submodule(conv_path), copy.get_submodule(bn_path)
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        copy.set_submodule(bn_path, nn.Identity())
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
    except (RuntimeError, ValueError):  # an input too small for the model: no check, no fold
        return False
    a, b = (getattr(t, "logits", t).float() for t in (a, b))
    return bool((a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-5)
