"""Transformation robustness: each step sees the image padded, shifted, scaled and rotated a
little, so the optimisation finds patterns and not pixel-exact adversarial noise.

The ranges are lucent's ``standard_transforms`` (pad 12 with grey, jitter 8 then 4 px, scale
0.9–1.1, rotation ±10°). The code is not lucent's: its transforms draw from numpy's global
generator (a seed would need ``np.random.seed``, felt by every other session of the server),
move tensors to the device it picked at import, and go through kornia (pinned ≤ 0.4.1). Here
the four moves are one affine warp per item (one ``grid_sample`` for the whole batch) with
per-item random numbers drawn up front from the item's own seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

PAD = 12  # px of grey around the image
JITTER = 12  # px: lucent's jitter(8) and jitter(4) together
SCALE = (0.9, 1.1)
ANGLE = 10.0  # degrees either way


class Robustness:
    """``robust(images, step)``: the batch as the model sees it at ``step``; item i's moves come
    from ``generators[i]`` alone, so they do not depend on the rest of the batch."""

    def __init__(self, generators: Sequence[torch.Generator], steps: int, device: torch.device):
        self.moves = torch.stack([torch.rand(steps, 4, generator=g) for g in generators]).to(device)

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        x = F.pad(images, [PAD] * 4, value=0.5)
        u = self.moves[:, step]  # N×4 in [0, 1)
        side = x.shape[-1]
        shift = (u[:, :2] * 2 - 1) * (JITTER / 2) * 2 / side  # px → affine_grid's [-1, 1] units
        scale = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 2]
        angle = (u[:, 3] * 2 - 1) * math.radians(ANGLE)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # "border": what comes in from outside is the grey padding, never black.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
