"""Augmentation on the device, for uint8 images already there (DESIGN §6: no per-epoch decoding)."""

from __future__ import annotations

import torch
from torch import nn


def augment(x: torch.Tensor, kinds: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """Per-sample random flips and crops on the device (float N×3×H×W in, same shape out)."""
    n = x.shape[0]
    if "flip" in kinds:
        flip = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if "crop" in kinds:  # random scale 0.75–1 and shift, as one affine warp per sample
        scale = 0.75 + 0.25 * torch.rand(n, device=x.device, generator=gen)
        shift = (1 - scale).unsqueeze(1) * (2 * torch.rand(n, 2, device=x.device, generator=gen) - 1)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


def device_generator(device: torch.device, cpu_gen: torch.Generator) -> torch.Generator:
    """Augmentation randomness is drawn on the device, seeded from the trial's CPU generator."""
    if device.type == "cpu":
        return cpu_gen
    g = torch.Generator(device=device)
    g.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=cpu_gen)))
    return g
