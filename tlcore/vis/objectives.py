"""What a render maximises, as lucent objectives: one objective per batch item, summed, so many
channels are optimised in one pass (``Objective.sum``).

Lucent's objectives read activations through a function ``T(layer)``; here ``T`` returns what
``tlcore.hooks.Capture`` read at that module path (dots kept, so names never collide as
lucent's ``_``-flattened ones can). Importing ``lucent.optvis.objectives`` pulls in neither
kornia nor lucent's device choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from lucent.optvis import objectives as lo

from tlcore.choices import KINDS

Kind = Literal["channel", "neuron", "layer", "direction"]
DIVERSITY_WEIGHT = 1e2  # lucent README's weight for diversity against a channel objective
VARIATIONS = 16  # renders of a whole layer ("layer" objective) one gallery offers


def item_count(kind: Kind, channels: int, classes: int) -> int:
    """How many things there are to render for an objective: channels (or their centre neurons),
    the dataset's classes (directions), or variations of the whole layer."""
    return {"direction": classes, "layer": VARIATIONS}.get(kind, channels)


@lo.wrap_objective()
def layer_energy(layer: str, batch: int | None = None):
    """The whole layer: mean squared activation (lucid's ``deepdream`` objective)."""

    @lo.handle_batch(batch)
    def inner(T):
        return -(T(layer) ** 2).mean()

    return inner


def per_item(kind: Kind, layer: str, targets: Sequence[int], directions: torch.Tensor | None = None
             ) -> lo.Objective:
    """Item i maximises ``targets[i]`` (a channel) or, for "direction", aligns the layer's
    activation with ``directions[i]`` (one C-vector per item); "layer" ignores the targets."""
    if kind == "channel":
        parts = [lo.channel(layer, c, batch=i) for i, c in enumerate(targets)]
    elif kind == "neuron":
        parts = [lo.neuron(layer, c, batch=i) for i, c in enumerate(targets)]  # the centre position
    elif kind == "layer":
        parts = [layer_energy(layer, batch=i) for i in range(len(targets))]
    elif kind == "direction":
        if directions is None or len(directions) != len(targets):
            raise ValueError("a direction objective needs one direction (a value per channel) per image")
        parts = [lo.direction(layer, directions[i], batch=i) for i in range(len(targets))]
    else:
        raise ValueError(f"unknown objective {kind!r}; choose one of: {', '.join(KINDS)}")
    return lo.Objective.sum(parts)


def diverse(layer: str, channel: int) -> lo.Objective:
    """Every item maximises ``channel`` while their Gram matrices are pushed apart: several
    different things one channel responds to (lucent's diversity objective)."""
    return lo.channel(layer, channel) - DIVERSITY_WEIGHT * lo.diversity(layer)
