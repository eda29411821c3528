"""A kept run's answer for one photo, in its own classes: the photo prepared as its dataset's
images were (the centre square at the run's resolution, read at the size the model reads it)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from tlcore import features, zoo
from tlcore.data.decode import square_rgb
from tlcore.hooks import Capture
from tlcore.vis.drift import finetuned_model


def run_resolution(run: dict) -> int | None:
    """The px its dataset was loaded at, from the run's label "NAME@SIZEpx#FINGERPRINT"."""
    _, at, rest = run["dataset"].rpartition("@")
    size = rest.split("px")[0]
    return int(size) if at and size.isdigit() else None


def classify(spec: zoo.ModelSpec, run: dict, state: dict, photo: np.ndarray, *,
             device: torch.device | str = "cpu", top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` classes of ``run`` (finished, with its weights ``state``) for an H×W×3 uint8
    photo, with their probabilities. A linear probe's head reads the pretrained model's pooled
    features at its block; a fine-tuned run's network answers whole."""
    config, classes = run["config"], run["result"]["classes"]
    px = run_resolution(run)
    if px is None:
        raise ValueError(f"run {run['id']} does not say the resolution its images had ({run['dataset']!r})")
    image = np.asarray(square_rgb(Image.fromarray(photo), px))
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(device)
    x = features.normalise(x, spec, features.read_size(spec, px))
    with torch.inference_mode():
        if config.get("freeze") == "all":
            logits = _probe(spec, config, state, x, device)
        else:
            logits = finetuned_model(spec, config, state, len(classes), device)(x)
    probs = logits.float().softmax(dim=1)[0].cpu()
    best = probs.topk(min(top, len(classes)))
    return [(classes[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]


def _probe(spec: zoo.ModelSpec, config: dict, state: dict, x: torch.Tensor, device) -> torch.Tensor:
    """A probe's kept head (a Linear on the raw pooled features) on the pretrained model's features."""
    if not config.get("pretrained", True):
        raise ValueError("a probe on random weights cannot be rebuilt: its backbone was never kept")
    base = zoo.load(spec, device=device)
    block = config.get("probe_block") or features.PENULTIMATE
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    with Capture(base, [features.hook_target(base, spec, block)]) as capture:
        pooled = features.pool(capture(x)[block].float(), spec.family)
    return head.to(device)(pooled)
