"""What fine-tuning changed: how similar each block's representation stays to the pretrained
network's, measured on the dataset.

Linear CKA (Kornblith, Norouzi, Lee and Hinton, ICML 2019, "Similarity of Neural Network
Representations Revisited") between the pretrained and the fine-tuned model's activations,
block by block. Blocks that stayed frozen compute the same function and give exactly 1; the
curve shows how deep fine-tuning reached. Activations are each image's per-channel mean
(``tlcore.features``' pooled view, cached and shared with the rest of the app): the spatial
layout's change is not counted, which keeps a block's cost one pass and its memory N×C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset
from tlcore.finetune import replace_head


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of N×P and N×Q activations of the same N inputs (eq. 5 of the paper, with
    centred columns): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), in float64. Invariant to orthogonal
    transforms and isotropic scaling; 1 for identical representations."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"CKA needs the same N ≥ 2 inputs on both sides, got {x.shape[0]} and {y.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    if x.shape[0] < max(x.shape[1], y.shape[1]):  # Gram form: N×N is the smaller product
        k, g = x @ x.T, y @ y.T
        cross, self_x, self_y = (k * g).sum(), (k * k).sum().sqrt(), (g * g).sum().sqrt()
    else:
        cross = ((y.T @ x) ** 2).sum()
        self_x, self_y = (x.T @ x).norm(), (y.T @ y).norm()
    denominator = self_x * self_y
    return float(cross / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Drift:
    blocks: list[str]  # the backbone's blocks (the head is always new)
    cka: list[float]
    frozen: int  # leading blocks the run kept frozen
    bn_trained: bool = False  # their BatchNorm statistics were updated: frozen blocks move too


def finetuned_model(spec: zoo.ModelSpec, config: dict, state: dict, n_classes: int,
                    device: torch.device | str = "cpu") -> nn.Module:
    """A kept run's network: the architecture with its new head, loaded with the run's weights."""
    if config.get("freeze") == "all":
        raise ValueError("a linear probe trains only a new head: its backbone is the pretrained one")
    model = zoo.load(spec, device="cpu", pretrained=False)
    replace_head(model, spec.num_classes, n_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # weights of another architecture or class count
        raise ValueError(f"the run's weights do not fit {spec.model}: {str(err).splitlines()[0]}") from None
    return model.eval().to(device)


def drift(spec: zoo.ModelSpec, dataset: Dataset, config: dict, *, tuned: nn.Module | None, tag: str,
          base: nn.Module | None = None, device: torch.device | str | None = None,
          on_step: features.OnStep | None = None) -> Drift:
    """CKA per backbone block between the pretrained network (``base``, only read) and ``tuned``
    (None for a linear probe, whose backbone is the pretrained one). ``tag`` names the tuned
    weights in the feature cache (e.g. ``run12@2026-11-23T10:00:00``). ``on_step``: both passes'
    progress in images (``features.OnStep``)."""
    if not config.get("pretrained", True):
        raise ValueError("a run trained from scratch has no pretrained weights to compare with")
    blocks = [b.name for b in zoo.blocks_of(spec)[:-1]]
    n, passes = len(dataset), 1 if tuned is None else 2
    before = features.extract_many(spec, dataset, blocks, model=base, device=device,
                                   on_step=features.shifted(on_step, 0, passes * n))
    after = before if tuned is None else features.extract_many(
        spec, dataset, blocks, model=tuned, view=f"center|{tag}", on_step=features.shifted(on_step, n, passes * n))
    freeze = config.get("freeze")
    return Drift(blocks, [linear_cka(before[b], after[b]) for b in blocks],
                 len(blocks) if freeze == "all" else int(freeze),
                 bn_trained=freeze != "all" and config.get("bn_mode") == "train")


def run_model(run: dict, store, spec: zoo.ModelSpec, device: torch.device | str) -> nn.Module | None:
    """The fine-tuned network of a kept run from the store (None for a linear probe)."""
    if run["status"] != "done" or not run["result"]:
        raise ValueError(f"run {run['id']} is {run['status']}: only finished runs can be compared")
    if run["config"].get("freeze") == "all":
        return None
    return finetuned_model(spec, run["config"], store.load_weights(run["id"]), len(run["result"]["classes"]),
                           device)


def run_tag(run: dict) -> str:
    """A name for a run's weights that stays unique if run ids are ever reused (a new store)."""
    return f"run{run['id']}@{run['created']}"


