"""Dataset examples (as OpenAI Microscope shows them): per channel, the images that excite it
most, and the activation ratio that says how far a render goes beyond them.

Both come from one batched pass over the dataset per layer: ``tlcore.features`` pools each
image's map per channel (spatial mean) and caches it, so the recommender, the gallery and the
ratio share the pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset


@dataclass(frozen=True)
class LayerStats:
    """The dataset's response at one layer: ``acts`` is N×C, each image's mean activation per channel."""

    layer: str
    acts: torch.Tensor

    @property
    def channels(self) -> int:
        return self.acts.shape[1]

    def top(self, channel: int, k: int = 9) -> list[int]:
        """Indices of the ``k`` dataset images with the highest mean activation of ``channel``."""
        return self.acts[:, channel].topk(min(k, len(self.acts))).indices.tolist()

    def top_along(self, direction: torch.Tensor, k: int = 9) -> list[int]:
        """Indices of the ``k`` images whose activation points furthest along ``direction``."""
        return (self.acts @ direction.float()).topk(min(k, len(self.acts))).indices.tolist()

    def ratio(self, channel: int, activation: float | None) -> float | None:
        """The activation ratio of a render: how far it excites ``channel`` past the dataset.

        ``(render − median) / (max − median)`` over the dataset's images: 1 means as strongly as
        the dataset's best image, 0 as an ordinary one, 5 five times further above the ordinary
        than the best natural image reaches. Measured from the median, not from zero, because
        EfficientNet's block outputs are linear: a channel's mean can be negative on every image,
        and a plain render ÷ max would then change sign or divide by ~0. For a ReLU channel the
        median is near 0 and the figure is the plain ratio. None when the channel does not vary
        over the dataset (max = median: a dead channel on this data) or for renders without a
        target channel.
        """
        if activation is None:
            return None
        column = self.acts[:, channel].double()
        median, top = column.median().item(), column.max().item()
        spread = top - median
        if not spread > 1e-6 * max(1.0, abs(top)):
            return None
        value = (activation - median) / spread
        return value if math.isfinite(value) else None


def layer_stats(spec: zoo.ModelSpec, dataset: Dataset, layer: str, *, model: nn.Module | None = None,
                device: torch.device | str | None = None, weights: str = "pretrained",
                on_step: features.OnStep | None = None) -> LayerStats:
    """One pass over ``dataset`` (cached) → each image's mean activation per channel of ``layer``.
    ``weights`` names other weights than the pretrained ones (a run's tag) in the feature cache;
    ``on_step``: the pass's progress in images (``features.OnStep``)."""
    view = "center" if weights == "pretrained" else f"center|{weights}"  # the recommender's pass is "center"
    acts = features.extract(spec, dataset, block=layer, model=model, device=device, view=view, on_step=on_step)
    if acts.dim() != 2:
        raise ValueError(f"{layer} does not give one value per channel")
    return LayerStats(layer, acts)


def class_directions(stats: LayerStats, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """One direction per class at the layer: the class's mean activation minus the dataset's
    (K×C). Rendered with the "direction" objective it shows what the layer associates with
    that class of *your* data, as opposed to what any one channel responds to."""
    overall = stats.acts.mean(0)
    rows = []
    for c in classes:
        members = stats.acts[labels == c]
        if len(members) == 0:
            raise ValueError(f"class {c} has no images")
        rows.append(members.mean(0) - overall)
    return torch.stack(rows)
