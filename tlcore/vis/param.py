"""The image being optimised: lucent's FFT spectrum with decorrelated colour (Olah et al. 2017,
"Feature Visualization", Distill), one independent image per batch item.

The numbers are lucent's own (``rfft2d_freqs``, the colour-correlation matrix, the 1/f scaling,
the ÷4 constant, the sigmoid), imported from it. The tensors are made here because lucent's
``param.image`` puts them on a device it chose at import (``cuda:0`` whenever CUDA exists, so a
CPU render on a GPU box fails) and draws the start from torch's global generator; here they go
on the caller's device and each item starts from its own seeded generator, so a channel's
render does not depend on which other channels share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

PARAMETERISATION = "fft-decorrelated"  # part of every render's cache key


def fft_image(size: int, generators: Sequence[torch.Generator], *, device: torch.device,
              sd: float = 0.01, decay_power: float = 1.0) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
    """(spectrum to optimise, image()) where image() is N×3×size×size in [0, 1]; item i starts
    from ``generators[i]`` (CPU generators: the same start on every device)."""
    from lucent.optvis.param.color import color_correlation_normalized
    from lucent.optvis.param.spatial import rfft2d_freqs

    freqs = rfft2d_freqs(size, size)
    start = torch.stack([torch.randn(3, *freqs.shape, 2, generator=g) for g in generators]) * sd
    spectrum = start.to(device).requires_grad_(True)
    scale = torch.tensor(1.0 / np.maximum(freqs, 1.0 / size) ** decay_power, dtype=torch.float32,
                         device=device)[None, None, ..., None]
    colour = torch.tensor(color_correlation_normalized.T, device=device)

    def image() -> torch.Tensor:
        spatial = torch.fft.irfftn(torch.view_as_complex(scale * spectrum), s=(size, size), norm="ortho")
        spatial = spatial[:, :, :size, :size] / 4.0  # lucent's "magic" constant against saturation
        decorrelated = torch.einsum("nchw,cd->ndhw", spatial, colour)
        return torch.sigmoid(decorrelated)

    return spectrum, image
