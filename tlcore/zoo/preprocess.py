"""Each model's own input pipeline, from its spec (torchvision transforms v2)."""

from __future__ import annotations

import functools

import torch
from torchvision.models import ResNet18_Weights
from torchvision.transforms import InterpolationMode, v2

from tlcore.zoo.spec import ModelSpec


def eval_transform(spec: ModelSpec) -> v2.Compose:
    """Resize → centre crop → float → normalise, as the weights were evaluated.

    Takes a uint8 tensor image (C×H×W or N×C×H×W) or a PIL image.
    """
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(spec.resize_size, interpolation=InterpolationMode(spec.interpolation), antialias=True),
        v2.CenterCrop(spec.crop_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ])


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (torchvision's metadata);
    the TF-trained Lite models use the same order."""
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_labels(spec: ModelSpec, outputs: int) -> tuple[str, ...]:
    """The class names of a head with ``outputs`` outputs: ImageNet's, or ValueError for another head."""
    names = imagenet_categories()
    if outputs != len(names):
        raise ValueError(f"{spec.key}'s head has {outputs} outputs, not ImageNet's {len(names)} classes")
    return names


def predict(spec: ModelSpec, model: torch.nn.Module, photo, *, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` ImageNet classes ``model`` (``spec``'s pretrained network, only read) gives an
    H×W×3 uint8 photo, with their probabilities, through the weights' own evaluation pipeline: the
    Keras recipe's model → preprocess → predict → decode predictions."""
    device = next(model.parameters()).device
    x = eval_transform(spec)(torch.as_tensor(photo).permute(2, 0, 1))[None].to(device)
    with torch.inference_mode():
        probs = model.eval()(x).float().softmax(dim=1)[0].cpu()
    names = imagenet_labels(spec, len(probs))
    best = probs.topk(top)
    return [(names[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]
