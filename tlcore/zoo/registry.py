"""The model registry: every torchvision classification weight plus the offline Lite models."""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model_weights, list_models

from tlcore import paths
from tlcore.zoo import lite
from tlcore.zoo.families import family_of, year_and_paper
from tlcore.zoo.spec import ModelSpec


class UnknownModelError(KeyError):
    """A model name that is not in the registry; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _hub_checkpoints() -> Path:
    # Exactly where torch.hub.load_state_dict_from_url caches (honours TORCH_HOME).
    return Path(torch.hub.get_dir()) / "checkpoints"


def _num_classes(weights) -> int:
    # VGG16's IMAGENET1K_FEATURES ships no categories: its classifier is untrained (1000 wide).
    categories = weights.meta["categories"]
    return len(categories) if categories is not None else 1000


def _arch_kwargs(model: str, weights) -> tuple[tuple[str, object], ...]:
    """Builder arguments that make a weights=None model match the pretrained one."""
    kw: dict[str, object] = {"num_classes": _num_classes(weights)}
    if model.startswith("vit_"):
        kw["image_size"] = weights.meta["min_size"][0]
    if model == "googlenet":
        kw.update(aux_logits=False, transform_input=True, init_weights=False)
    if model == "inception_v3":
        kw.update(aux_logits=True, transform_input=True, init_weights=False)
    return tuple(sorted(kw.items()))


def _torchvision_spec(model: str, weights, default, first) -> ModelSpec:
    meta = weights.meta
    tf = weights.transforms()
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    family = family_of(model)
    year, paper = year_and_paper(family)
    filename = os.path.basename(urlparse(weights.url).path)
    return ModelSpec(
        key=f"{model}.{weights.name}",
        model=model,
        weights=weights.name,
        source="torchvision",
        family=family,
        year=year,
        paper=paper,
        params=meta["num_params"],
        gflops=meta["_ops"],
        file_size_mb=meta["_file_size"],
        acc1=metrics.get("acc@1", float("nan")),
        acc5=metrics.get("acc@5", float("nan")),
        metrics_source="torchvision weights metadata",
        is_default=weights is default,
        is_first=weights is first,
        crop_size=tf.crop_size[0],
        resize_size=tf.resize_size[0],
        mean=tuple(tf.mean),
        std=tuple(tf.std),
        interpolation=tf.interpolation.value,
        num_classes=_num_classes(weights),
        weights_url=weights.url,
        weights_file=str(_hub_checkpoints() / filename),
        recipe=meta.get("recipe", ""),
        arch_kwargs=_arch_kwargs(model, weights),
    )


def macs(model: nn.Module, size: int) -> float:
    """Multiply-accumulates per image in 1e9 (the unit of torchvision's ``_ops``).

    Counted by torch's FlopCounterMode (2 FLOPs per MAC); works on a meta-device model.
    """
    x = torch.empty(1, 3, size, size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2e9


def _lite_measures(item: lite.LiteModel, size: int) -> dict:
    """Parameter count and GMACs of a Lite architecture (meta build; cached on disk)."""

    def compute() -> dict:
        with torch.device("meta"):
            arch = lite.build(item).eval()
        return {"params": sum(p.numel() for p in arch.parameters()), "gmacs": round(macs(arch, size), 3)}

    return paths.cached_json("lite-measures.json", f"{item.arch}@{size}", compute)


def _lite_spec(item: lite.LiteModel) -> ModelSpec:
    size = lite.image_size(item)
    measured = _lite_measures(item, size)
    path = lite.weights_file(item)
    year, paper = year_and_paper("efficientnet_lite")
    return ModelSpec(
        key=f"{item.model}.IMAGENET1K_TF",
        model=item.model,
        weights="IMAGENET1K_TF",
        source=item.package.replace("_", "-"),
        family="efficientnet_lite",
        year=year,
        paper=paper,
        params=measured["params"],
        gflops=measured["gmacs"],
        file_size_mb=round(path.stat().st_size / 2**20, 3) if path and path.exists() else float("nan"),
        acc1=item.reported_acc1,
        metrics_source=lite.TF_RELEASE,
        is_default=True,
        is_first=True,
        crop_size=size,
        resize_size=size + 32,  # TF's eval crop: centre crop with 32 px padding
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        weights_file=str(path) if path else "",
    )


@functools.lru_cache(maxsize=4)
def _registry(hub_dir: str) -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for model in list_models(module=torchvision.models):
        enum = get_model_weights(model)
        # SWAG weights were pretrained on 3.6 B Instagram images first: never the paper's ImageNet-only training.
        first = next((w for w in enum if "SWAG" not in w.name), None)
        for weights in enum:
            spec = _torchvision_spec(model, weights, enum.DEFAULT, first)
            specs[spec.key] = spec
    for item in lite.LITE_MODELS:
        if lite.weights_file(item) is not None:
            spec = _lite_spec(item)
            specs[spec.key] = spec
    return specs


def list_models_specs() -> list[ModelSpec]:
    """All registered (model, weights) pairs, torchvision first, in name order."""
    return list(_registry(torch.hub.get_dir()).values())


def get_spec(name: str) -> ModelSpec:
    """A spec by key (``resnet50.IMAGENET1K_V2``) or model name (its default weights)."""
    specs = _registry(torch.hub.get_dir())
    if name in specs:
        return specs[name]
    for spec in specs.values():
        if spec.model == name and spec.is_default:
            return spec
    choices = sorted({s.model for s in specs.values()} | set(specs))
    close = difflib.get_close_matches(name, choices, n=4, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else "; see `tlcore zoo` for the list"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def weights_available(spec: ModelSpec) -> bool:
    """Weights present on disk now (hub cache or a package) — never downloads."""
    return bool(spec.weights_file) and Path(spec.weights_file).exists()
