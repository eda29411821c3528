"""The optimizer and its learning-rate schedule, as torchvision's classification references set them up."""

from __future__ import annotations

import math

import torch
from torch import nn

from tlcore.finetune.config import TrialConfig

WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.01}
WARMUP_SHARE = 0.1  # of the trial, at most one epoch: a new head's first gradients are large
# Normalisation layers whose weights are scales, not filters (torchvision's set_weight_decay list).
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm)


def optimizer(model: nn.Module, cfg: TrialConfig, head_path: str = "") -> torch.optim.Optimizer:
    """Head parameters (all of ``model`` when ``head_path`` is empty) at ``lr``, unfrozen backbone
    parameters at ``lr × backbone_lr_mult``; no weight decay on normalisation parameters and
    biases (decay there only pulls scales and offsets towards zero, it does not regularise)."""
    def in_head(name: str) -> bool:
        return not head_path or name.startswith(head_path + ".")

    no_decay = _undecayed(model)
    groups = []
    for head, lr in ((True, cfg.lr), (False, cfg.lr * cfg.backbone_lr_mult)):
        if not head and cfg.backbone_lr_mult == 0:
            continue
        chosen = [(n, p) for n, p in model.named_parameters() if p.requires_grad and in_head(n) == head]
        for decays in (True, False):
            params = [p for n, p in chosen if (n not in no_decay) == decays]
            if params:
                groups.append({"params": params, "lr": lr,
                               "weight_decay": WEIGHT_DECAY[cfg.optimizer] if decays else 0.0})
    # One fused kernel per step for every parameter on a GPU instead of a loop of small ones
    # (torch's fused AdamW/SGD; a GradScaler's unscale and inf check run inside it).
    fused = {"fused": True} if _all_on_cuda(groups) else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **fused)
    return torch.optim.SGD(groups, momentum=0.9, **fused)


def _all_on_cuda(groups: list[dict]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def _undecayed(model: nn.Module) -> set[str]:
    """Names of normalisation parameters and of every bias."""
    names = set()
    for path, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name == "bias":
                names.add(f"{path}.{name}" if path else name)
    return names


class Schedule:
    """The learning rate as a function of training progress (images seen ÷ images in the trial):
    constant, or a linear warm-up then cosine decay to zero. Progress, not a step count, so a batch
    halved after running out of memory keeps the same curve. (torchvision's references step per
    epoch; a trial here has only a few epochs, so the rate changes per batch.)"""

    def __init__(self, opt: torch.optim.Optimizer, cfg: TrialConfig, images_per_epoch: int):
        self.opt, self.kind = opt, cfg.schedule
        self.total = max(1, cfg.epochs * images_per_epoch)
        self.warmup = min(WARMUP_SHARE, 1 / cfg.epochs)  # a share of the trial, at most one epoch
        self.seen = 0
        self.peaks = [g["lr"] for g in opt.param_groups]
        self._apply()

    def factor(self, progress: float) -> float:
        if self.kind == "constant":
            return 1.0
        if progress < self.warmup:  # linear from 1 % of the peak (torchvision's --lr-warmup-decay 0.01)
            return 0.01 + 0.99 * progress / self.warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - self.warmup) / (1 - self.warmup))))

    def advance(self, images: int) -> None:
        """After an optimizer step on ``images`` images: the rate for the next one."""
        self.seen += images
        self._apply()

    def scale_peaks(self, factor: float) -> None:
        """Every group's peak rate × ``factor`` from now on (an automatic batch halved: its rates
        were scaled with the batch, so they follow it down)."""
        self.peaks = [p * factor for p in self.peaks]
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.seen / self.total)
        for group, peak in zip(self.opt.param_groups, self.peaks, strict=True):
            group["lr"] = peak * f
