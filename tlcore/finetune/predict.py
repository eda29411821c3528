"""A kept run's answer for one photo, in its own classes: the photo prepared as its dataset's
images were (the centre square at the run's resolution, read at the size the model reads it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset
from tlcore.data.decode import square_rgb
from tlcore.device import halved, inference_batch, unless_out_of_memory, working
from tlcore.finetune.engine import confusion
from tlcore.hooks import Capture
from tlcore.vis.drift import finetuned_model

Network = Callable[[torch.Tensor], torch.Tensor]  # normalised N×3×S×S input → N×classes logits


def run_resolution(run: dict) -> int | None:
    """The px its dataset was loaded at, from the run's label "NAME@SIZEpx#FINGERPRINT"."""
    _, at, rest = run["dataset"].rpartition("@")
    size = rest.split("px")[0]
    return int(size) if at and size.isdigit() else None


def prepare(run: dict, photo: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 photo as the run's dataset images were: the centre square at its resolution."""
    px = run_resolution(run)
    if px is None:
        raise ValueError(f"run {run['id']} does not say the resolution its images had ({run['dataset']!r})")
    return np.asarray(square_rgb(Image.fromarray(photo), px))


def run_network(spec: zoo.ModelSpec, run: dict, state: dict, *, device: torch.device | str = "cpu",
                base: nn.Module | None = None) -> Network:
    """What answers for a finished ``run`` with its kept weights ``state``: the fine-tuned network,
    or a probe's head on the pretrained model's pooled features at its block. ``base``: that
    pretrained model, only read (the app passes its shared one); loaded when not given."""
    config, n_classes = run["config"], len(run["result"]["classes"])
    if config.get("freeze") != "all":
        return finetuned_model(spec, config, state, n_classes, device)
    if not config.get("pretrained", True):
        raise ValueError("a probe on random weights cannot be rebuilt: its backbone was never kept")
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return _Probe(spec, base if base is not None else zoo.load(spec, device=device),
                  config.get("probe_block") or features.PENULTIMATE, head.eval().to(device))


class _Probe:
    """A linear probe as a network. Not an nn.Module, so that moving or copying it never touches
    the pretrained model it reads, which the app shares between sessions."""

    def __init__(self, spec: zoo.ModelSpec, base: nn.Module, block: str, head: nn.Linear):
        self.spec, self.base, self.block, self.head = spec, base, block, head

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with Capture(self.base, [features.hook_target(self.base, self.spec, self.block)]) as capture:
            pooled = features.pool(capture(x)[self.block].float(), self.spec.family)
        return self.head(pooled)


def classify(spec: zoo.ModelSpec, run: dict, network: Network, photo: np.ndarray, *,
             device: torch.device | str = "cpu", top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` classes of ``run`` for an H×W×3 uint8 photo, with their probabilities, from its
    ``run_network``."""
    classes = run["result"]["classes"]
    image = prepare(run, photo)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].to(device)
    with torch.inference_mode():
        logits = network(features.normalise(x, spec, features.read_size(spec, image.shape[0])))
    probs = logits.float().softmax(dim=1)[0].cpu()
    best = probs.topk(min(top, len(classes)))
    return [(classes[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]


@dataclass(frozen=True)
class Answers:
    """A run's answers for some of a dataset's images (class indices into the run's classes)."""

    indices: np.ndarray  # the images' indices in the dataset
    truth: np.ndarray
    said: np.ndarray
    confidence: np.ndarray  # the probability the run gave to what it said

    def accuracy(self) -> float:
        return float((self.said == self.truth).mean()) if len(self.truth) else float("nan")

    def confusion(self, n_classes: int) -> np.ndarray:
        """Rows: true class, columns: what the run said (the layout of a trial's stored confusion)."""
        return confusion(torch.from_numpy(self.truth), torch.from_numpy(self.said), n_classes).numpy()

    def mistakes(self) -> np.ndarray:
        """Positions (into ``indices``) of the wrong answers, the most confident first: those teach most."""
        wrong = np.flatnonzero(self.said != self.truth)
        return wrong[np.argsort(-self.confidence[wrong], kind="stable")]


def not_its_validation(run: dict, dataset: Dataset) -> str:
    """Why ``dataset``'s validation images are not the ones ``run`` was validated on ("" when they are)."""
    trained_on = run["dataset"].split("#")[0]
    # The images by content and size (the label's name is the source as typed: a path from the CLI).
    if not run["dataset"].endswith(f"@{dataset.size}px#{dataset.fingerprint}"):
        return (f"Run {run['id']} was trained on {trained_on}, not on these images: load that dataset as it was "
                "(the same cap per class and seed) to see its mistakes.")
    if not run["result"].get("val_split"):
        return f"Run {run['id']} predates the record of its validation split: run it again to see its mistakes."
    if run["result"]["val_split"] != dataset.split_digest():
        return (f"{trained_on} is split another way now (another seed): some of these validation images were "
                f"run {run['id']}'s training images. Load it with the seed it had to see its mistakes.")
    return ""


def answer_validation(spec: zoo.ModelSpec, run: dict, network: Network, dataset: Dataset, *,
                      device: torch.device | str = "cpu", batch_size: int | None = None,
                      on_step: features.OnStep | None = None) -> Answers:
    """``run``'s answers for its validation images, read as the run read them. ``dataset`` must be
    the run's, split as it was: its classes at its resolution, and the same validation images.
    Batches halve when the device runs out of memory (a trial may be training beside it)."""
    reason = not_its_validation(run, dataset)
    if reason:
        raise ValueError(reason)
    device = torch.device(device)
    size, rows = features.read_size(spec, dataset.size), dataset.val_idx
    batch_size = batch_size or inference_batch(device, size)

    def best(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.normalise(dataset.images[rows[start:start + n]].to(device), spec, size)
        top = network(x).float().softmax(dim=1).max(dim=1)
        return top.indices.cpu(), top.values.cpu()

    said, confidence = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0)]
    start = 0
    with torch.inference_mode(), working(device):  # a trial meanwhile is marked as timed under load
        while start < len(rows):
            done = unless_out_of_memory(best, start, batch_size)
            if done is None:
                batch_size = halved(batch_size, features.one_image(spec, size))
                continue
            said.append(done[0])
            confidence.append(done[1])
            start += batch_size
            if on_step is not None:
                on_step(min(start, len(rows)), len(rows))
    return Answers(indices=rows.numpy(), truth=dataset.labels[rows].numpy(), said=torch.cat(said).numpy(),
                   confidence=torch.cat(confidence).numpy())
