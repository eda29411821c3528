"""Model surgery for a trial: a new head, frozen blocks, and the BatchNorm layers that learn."""

from __future__ import annotations

import functools

from torch import nn

from tlcore import features, zoo
from tlcore.finetune.config import TrialConfig

_BatchNorm = nn.modules.batchnorm._BatchNorm


def head_params(model: nn.Module, num_classes: int) -> int:
    """Parameters of ``model``'s classifier (the one with ``num_classes`` outputs)."""
    return sum(p.numel() for p in model.get_submodule(features.classifier_path(model, num_classes)).parameters())


@functools.cache
def imagenet_head_params(spec: zoo.ModelSpec) -> int:
    """Parameters of ``spec``'s ImageNet classifier, which every trial replaces (a meta-device build)."""
    return head_params(zoo.build_meta(spec), spec.num_classes)


def replace_head(model: nn.Module, num_classes: int, n_out: int) -> str:
    """Swap the ImageNet classifier for a fresh one with ``n_out`` outputs; returns its path."""
    path = features.classifier_path(model, num_classes)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, n_out)
    else:  # SqueezeNet's 1×1 convolution classifier
        new = nn.Conv2d(old.in_channels, n_out, kernel_size=1)
    setattr(parent, name, new.to(next(old.parameters()).device))
    return path


def freeze(model: nn.Module, spec: zoo.ModelSpec, cfg: TrialConfig) -> list[nn.Module]:
    """Set requires_grad per ``cfg.freeze`` (a depth: a linear probe never reaches here, it trains
    a head on cached features); returns the frozen modules (for the BatchNorm mode)."""
    frozen = []
    for block in zoo.blocks_of(spec)[: cfg.freeze]:
        for path in block.members:
            try:
                module = model.get_submodule(path)
            except AttributeError:  # a bare parameter (ViT's class token, position embedding)
                model.get_parameter(path).requires_grad = False
                continue
            module.requires_grad_(False)
            frozen.append(module)
    return frozen


def prepare_batchnorms_for_training(model: nn.Module, frozen: list[nn.Module], cfg: TrialConfig) -> None:
    """After ``model.train()``: BatchNorm in frozen blocks keeps ImageNet's statistics (unless
    ``bn_mode="train"``); every other BatchNorm restarts its epoch average."""
    still = frozen if cfg.bn_mode == "frozen" else []
    for module in still:
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
    _restart_batchnorm_averages(_live_batchnorms(model, still))


def _live_batchnorms(model: nn.Module, frozen: list[nn.Module]) -> list[nn.Module]:
    """BatchNorm layers whose statistics train: those outside ``frozen``."""
    keep = {id(m) for module in frozen for m in module.modules()}
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) not in keep]


def _restart_batchnorm_averages(layers: list[nn.Module]) -> None:
    """Make each live BatchNorm's running statistics the plain average of this epoch's batches.

    Evaluation uses running statistics. With the momentum TF-ported weights carry (0.01 for
    EfficientNet-Lite and MobileNetV3) a few hundred steps leave them mostly ImageNet's, and
    validation accuracy collapses towards chance while training accuracy climbs. An epoch
    average matches the weights being evaluated and costs no extra pass.
    """
    for m in layers:
        m.reset_running_stats()
        if _average_so_far not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_average_so_far)
        m._epoch_batches = 0


def _average_so_far(m: nn.Module, args) -> None:
    """Before a training batch: momentum 1/n on the n-th batch since the reset makes the running
    statistics the plain average of the n batches. That is what ``momentum=None`` does, but torch
    reads its batch count back from the device there (``float(num_batches_tracked)``): on a GPU,
    every live BatchNorm made every training step wait for the device to catch up."""
    if m.training:
        m._epoch_batches += 1
        m.momentum = 1.0 / m._epoch_batches
