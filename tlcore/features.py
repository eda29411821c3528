"""Activations of a dataset at any block of a model — the one place features are computed.

The recommender, the fine-tune lab and the visualisations reuse what is cached here, in memory
and on disk, keyed by (model, weights, dataset fingerprint, block, input size, view).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlcore import paths, zoo
from tlcore.data import Dataset
from tlcore.device import (
    autocast,
    halved,
    inference_batch,
    input_format,
    mixed_dtype,
    pick_device,
    unless_out_of_memory,
    working,
)
from tlcore.fold import folded
from tlcore.hooks import Capture, Target, thread_hooks

# Architectures whose input size is fixed by their position embeddings / window partition.
FIXED_INPUT = ("vit", "maxvit")
PENULTIMATE = "penultimate"  # the classifier's input: the standard linear-probe features
LOGITS = "logits"  # the source classifier's own output (ImageNet's 1000 classes)

_MEMORY: OrderedDict[str, object] = OrderedDict()  # feature entries (Stored), BatchNorm statistics
_MEMORY_ITEMS = 16
_MEMORY_LOCK = threading.Lock()

# ``on_step(done, total)``: images done so far of those a pass runs on, after each batch (a
# progress bar's feed; a caller may raise from it to stop the pass, which then caches nothing).
OnStep = Callable[[int, int], None]


def shifted(on_step: OnStep | None, before: int, total: int) -> OnStep | None:
    """``on_step`` for one pass among several: its images count after ``before`` of ``total``."""
    return None if on_step is None else lambda done, _n: on_step(before + done, total)


def classifier_path(model: nn.Module, num_classes: int) -> str:
    """The last module that maps to ``num_classes`` outputs (Linear, or SqueezeNet's 1×1 conv)."""
    last = [name for name, m in model.named_modules()
            if getattr(m, "out_features", getattr(m, "out_channels", None)) == num_classes]
    if not last:
        raise ValueError(f"no classifier with {num_classes} outputs found")
    return last[-1]


def pool(x: torch.Tensor, family: str) -> torch.Tensor:
    """N×D features from a block output: spatial mean, ViT's class token, Swin's NHWC layout."""
    if x.dim() == 4:
        return x.mean(dim=(1, 2)) if family in ("swin", "swin_v2") else x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x[:, 0]  # ViT: the class token
    return x.flatten(1)


def input_size(spec: zoo.ModelSpec, dataset: Dataset) -> int:
    """The size every pass of ``spec`` over ``dataset`` reads its images at: the dataset's, enlarged
    where the network needs more (a fixed input size, or ``zoo.smallest_input``: below it the last
    map is a single position and pretrained features collapse)."""
    return read_size(spec, dataset.size)


def read_size(spec: zoo.ModelSpec, px: int) -> int:
    """``input_size`` for images of ``px``. At the weights' own crop size or above, the network sees
    at least what it was trained and evaluated on, so the search for its smallest input is skipped
    (2.5 s of a 2-core CPU once per architecture where the package ships no facts for this
    torchvision: ``zoo.facts``)."""
    if spec.family in FIXED_INPUT:
        return spec.crop_size
    return px if px >= spec.crop_size else max(px, zoo.smallest_input(spec))


def enlargement_note(spec: zoo.ModelSpec, dataset_px: int, read_px: int) -> str:
    """Why ``spec`` reads ``dataset_px`` images at ``read_px`` (``input_size``); "" where it does not."""
    if read_px <= dataset_px:
        return ""
    why = ("the one size it takes" if spec.family in FIXED_INPUT else
           "the smallest size at which its last feature map has more than one position: below it pretrained "
           "features collapse (EfficientNet-Lite0's ImageNet head answered at chance on 32 px images)")
    return f"{spec.model} reads these {dataset_px} px images enlarged to {read_px} px, {why}."


def _key(spec: zoo.ModelSpec, dataset: Dataset, block: str, size: int, view: str,
         precision: torch.dtype | None = None) -> str:
    """``precision``: the autocast dtype the features were computed in (None: float32), so a
    GPU's bf16 features are never handed to a float32 caller, nor mixed with its rows. Named in
    every key: keys without it were written before, in either precision."""
    raw = f"{spec.key}|{dataset.fingerprint}|{block}|{size}|{view}|{precision or torch.float32}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def hook_target(model: nn.Module, spec: zoo.ModelSpec, block: str) -> Target:
    """What to read for ``block``: a block of the zoo's list (its last module's output), the
    classifier's input or output, or any module path of ``named_modules()`` (a layer)."""
    path, inputs = _read_at(model, spec, block)
    return Target(block, model.get_submodule(path), inputs=inputs)


def check_block(spec: zoo.ModelSpec, block: str) -> None:
    """Raise the ValueError ``extract`` would for a ``block`` ``spec`` lacks, before any work (the
    architecture on the meta device: no weights, no pass)."""
    _read_at(zoo.build_meta(spec), spec, block)


def _read_at(model: nn.Module, spec: zoo.ModelSpec, block: str) -> tuple[str, bool]:
    """(module path, whether its input rather than its output is read) for ``block``."""
    if block in (LOGITS, PENULTIMATE):
        return classifier_path(model, spec.num_classes), block == PENULTIMATE
    names = [b.name for b in zoo.blocks_of(spec)]
    if block in names:
        members = [m for m in zoo.blocks_of(spec)[names.index(block)].members
                   if _is_module(model, m) and not _AUXILIARY.fullmatch(m)]
        return members[-1], False
    if block and _is_module(model, block):
        return block, False
    raise ValueError(f"unknown block {block!r} for {spec.model}; choose one of: "
                     f"{', '.join(names)}, {PENULTIMATE}, {LOGITS} or a module path (`tlcore layers`)")


# Auxiliary classifiers (Inception's AuxLogits, GoogLeNet's aux1/aux2) run only in training: a
# block's output is read at its last module that runs in evaluation.
_AUXILIARY = re.compile(r"AuxLogits|aux\d")


def _is_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def normalise(batch: torch.Tensor, spec: zoo.ModelSpec, size: int) -> torch.Tensor:
    """uint8 N×3×S×S on the device → the model's normalised float input at ``size``."""
    x = batch.float().div_(255.0)
    if x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                      align_corners=False)
    return standardise(x, spec)


def standardise(x: torch.Tensor, spec: zoo.ModelSpec) -> torch.Tensor:
    """Float images in [0, 1] → the model's input: its own mean and std (0.5 and 0.5 for the
    TF-ported Lite models, ImageNet's for torchvision's weights), in the device's layout
    (``device.input_format``: convolutions follow their input's layout)."""
    mean, std = _channel_stats(tuple(spec.mean), tuple(spec.std), x.device, x.dtype)
    return ((x - mean) / std).contiguous(memory_format=input_format(x.device))


@functools.lru_cache(maxsize=32)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: a new small tensor from Python values is a copy from pageable memory,
    which on a GPU waits for every queued kernel — per batch, the CPU could never run ahead.
    Outside inference mode, whatever the first caller ran in: a render's gradients pass them."""
    with torch.inference_mode(False):
        return (torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1),
                torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1))


@torch.inference_mode()
def _compute(model: nn.Module, spec: zoo.ModelSpec, dataset: Dataset, blocks: list[str], size: int,
             device: torch.device, batch_size: int, rows: torch.Tensor, mixed: bool,
             on_step: OnStep | None = None) -> dict[str, torch.Tensor]:
    """Pooled features of the images ``rows`` at every block in ``blocks`` from one pass; the
    forward pass stops as soon as the last of them has been captured."""
    captured: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    images = _rows_on(dataset.images, rows, device)
    with working(device), Capture(model, [hook_target(model, spec, b) for b in blocks]) as capture, \
            autocast(device, enabled=mixed):
        def pooled(start: int, n: int, images: torch.Tensor | None) -> dict[str, torch.Tensor]:
            x = normalise(_batch(dataset, images, rows, start, n, device), spec, size)
            return {b: pool(v.float(), spec.family) for b, v in capture(x).items()}

        start = 0
        while start < len(rows):
            done = unless_out_of_memory(pooled, start, batch_size, images)
            if done is None:  # a large model or input on a small GPU
                images = None  # the images go to the device batch by batch from now on
                batch_size = halved(batch_size, one_image(spec, size))
                continue
            for block, value in done.items():
                captured[block].append(value)
            start += batch_size
            if on_step is not None:
                on_step(min(start, len(rows)), len(rows))
    # To the CPU once, at the end: a copy per batch made the CPU wait for each batch in turn.
    return {b: torch.cat(parts).cpu() for b, parts in captured.items()}


def _batch(dataset: Dataset, images: torch.Tensor | None, rows: torch.Tensor, start: int, n: int,
           device: torch.device) -> torch.Tensor:
    """Images ``rows[start:start + n]`` on the device: a slice of those copied there at once, or a copy."""
    if images is not None:
        return images[start:start + n]
    # Not non_blocking on MPS: it may read the indexed copy after it is freed (pytorch/pytorch#139550);
    # on CUDA a pageable source is staged before the call returns.
    return dataset.images[rows[start:start + n]].to(device, non_blocking=device.type == "cuda")


# Images copied to an accelerator in one go for a feature pass (bytes of uint8): one copy instead
# of a gather and a copy per batch, during which the GPU waited (2,000 images at 224 px: 301 MB).
ROWS_ON_DEVICE_BYTES = 2 * 2**30


def _rows_on(images: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """``images[rows]`` on ``device`` when it is an accelerator and they fit the budget, else None."""
    if device.type == "cpu" or len(rows) * images[0].numel() > ROWS_ON_DEVICE_BYTES:
        return None
    first = int(rows[0])
    if torch.equal(rows, torch.arange(first, first + len(rows))):  # a slice: no gather on the CPU
        chosen = images[first:first + len(rows)]
    else:
        chosen = images[rows]
    return unless_out_of_memory(chosen.to, device)  # None on a GPU too small: batch by batch, then


def one_image(spec: zoo.ModelSpec, size: int) -> str:
    """What to shrink when one image of ``spec`` at ``size`` px does not fit the device (``halved``)."""
    return f"image in {spec.model} at {size} px: load the dataset at a smaller resolution"


def extract(spec: zoo.ModelSpec, dataset: Dataset, *, block: str = PENULTIMATE,
            model: nn.Module | None = None, device: torch.device | str | None = None,
            batch_size: int | None = None, view: str = "center", mixed: bool = True,
            on_step: OnStep | None = None) -> torch.Tensor:
    """N×D float32 features of every image in ``dataset`` at ``block`` (pooled), on the CPU.

    ``model``: an already loaded (possibly shared) model — it is only read, hooks are removed
    afterwards; default: the pretrained model from the zoo. Cached in memory and on disk.
    ``mixed``: in the device's mixed precision (bf16 on a GPU); False for float32 throughout.
    ``on_step``: progress of the pass, if one runs (see ``OnStep``).
    """
    return extract_many(spec, dataset, [block], model=model, device=device, batch_size=batch_size,
                        view=view, mixed=mixed, on_step=on_step)[block]


def extract_many(spec: zoo.ModelSpec, dataset: Dataset, blocks: list[str], *, model: nn.Module | None = None,
                 device: torch.device | str | None = None, batch_size: int | None = None,
                 view: str = "center", rows: torch.Tensor | None = None, mixed: bool = True,
                 on_step: OnStep | None = None) -> dict[str, torch.Tensor]:
    """``extract`` for several blocks: what is not cached yet comes from a single forward pass.

    ``rows``: only these images (indices into the dataset), e.g. the training split that the
    scores use — the features come back in that order, len(rows)×D. The cache remembers which
    images it holds, so a later call for other rows (the lab's probe wants every image) runs
    the model on the missing images only."""
    size = input_size(spec, dataset)
    wanted = torch.arange(len(dataset)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    if not len(wanted):
        raise ValueError("no images to compute features of")
    dev = _device_for(model, device)
    keys = {b: _key(spec, dataset, b, size, view, mixed_dtype(dev) if mixed else None) for b in blocks}
    held = {b: _cached(keys[b], dataset.private) for b in blocks}
    lacking = [b for b in blocks if held[b] is None or not held[b].done[wanted].all()]
    if lacking:
        missing = torch.zeros(len(dataset), dtype=torch.bool)
        for b in lacking:
            missing[wanted if held[b] is None else wanted[~held[b].done[wanted]]] = True
        todo = missing.nonzero().flatten()
        model, dev = _model_on(spec, model, dev)
        model = folded(model.eval(), keep=[_read_at(model, spec, b)[0] for b in lacking],
                       dtype=mixed_dtype(dev) if mixed else None)
        computed = _compute(model, spec, dataset, lacking, size, dev,
                            batch_size or inference_batch(dev, size), todo, mixed,
                            shifted(on_step, len(wanted) - len(todo), len(wanted)))  # counts the cached rows as done
        for b, feats in computed.items():
            held[b] = _fill_entry(keys[b], len(dataset), todo, feats, dataset.private)
    return {b: held[b].features if rows is None else held[b].features[wanted] for b in blocks}


@dataclass(frozen=True)
class Stored:
    """A cache entry: N×D features of which the rows marked in ``done`` are computed (the rest
    are zeros, never handed out)."""

    features: torch.Tensor
    done: torch.Tensor  # N bools

    @staticmethod
    def of(entry: Stored | None, n: int) -> Stored:
        return entry or Stored(torch.zeros(n, 0), torch.zeros(n, dtype=torch.bool))

    def filled(self, rows: torch.Tensor, feats: torch.Tensor) -> Stored:
        """A new entry with ``rows`` set (the cached tensors may be in a caller's hands: not
        changed in place)."""
        out = self.features.clone() if self.features.shape[1] else feats.new_zeros(len(self.done), feats.shape[1])
        out[rows] = feats
        done = self.done.clone()
        done[rows] = True
        return Stored(out, done)

    @staticmethod
    def read(obj) -> Stored:
        """From disk: a dict of both, or a bare tensor (entries from before rows were tracked)."""
        if isinstance(obj, torch.Tensor):
            return Stored(obj, torch.ones(len(obj), dtype=torch.bool))
        return Stored(obj["features"], obj["done"])


def _cached(key: str, private: bool) -> Stored | None:
    with _MEMORY_LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
    path = paths.folder("features", private=private) / f"{key}.pt"
    if path.exists():
        try:
            entry = Stored.read(torch.load(path, map_location="cpu", weights_only=True))
            paths.touch(path)  # used now: the cache budget drops the least recently used first
            return _remember(key, entry)
        except (OSError, RuntimeError, EOFError, KeyError):
            path.unlink(missing_ok=True)
    return None


def _fill_entry(key: str, n: int, rows: torch.Tensor, feats: torch.Tensor, private: bool) -> Stored:
    """Add computed rows to the entry as it is now, not as this call first read it: another
    thread may have added other rows meanwhile (the Strategy page's training rows while the lab's
    probe computes every image), and the last writer must not drop them."""
    with _MERGE_LOCK:
        return _store(key, Stored.of(_cached(key, private), n).filled(rows, feats), private)


_MERGE_LOCK = threading.Lock()


def _store(key: str, entry: Stored, private: bool) -> Stored:
    path = paths.folder("features", private=private) / f"{key}.pt"
    paths.write_atomically(path, lambda f: torch.save({"features": entry.features, "done": entry.done}, f))
    return _remember(key, entry)


def source_probs(spec: zoo.ModelSpec, dataset: Dataset, **kw) -> torch.Tensor:
    """N×1000 softmax of the pretrained ImageNet head over the dataset (LEEP, NCE, confidence)."""
    return extract(spec, dataset, block=LOGITS, **kw).softmax(dim=1)


def batchnorm_statistics(spec: zoo.ModelSpec, dataset: Dataset, *, model: nn.Module | None = None,
                         device: torch.device | str | None = None, max_images: int = 512,
                         on_step: OnStep | None = None) -> list[dict[str, torch.Tensor | str]]:
    """Per BatchNorm layer, in forward order: the per-channel mean and variance of its input over
    (up to ``max_images`` of) the dataset, beside the running statistics it stored in training.
    ``{"name", "mean", "var", "stored_mean", "stored_var"}``, float64 tensors of C channels."""
    size = input_size(spec, dataset)
    key = _key(spec, dataset, f"batchnorm-stats-{max_images}", size, "center")
    with _MEMORY_LOCK:
        if key in _MEMORY:
            return _MEMORY[key]
    model, dev = _model_on(spec, model, device)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    moments: dict[str, list] = {}  # name → [count, mean, M2] per channel, float64
    order: list[str] = []

    def hook_for(name):
        def hook(module, args):
            batch = _moments(args[0].detach())
            if name not in moments:
                order.append(name)
            moments[name] = _merge(moments[name], batch) if name in moments else batch
        return hook

    step = inference_batch(dev, size)
    idx = _batchnorm_rows(dataset, max_images)
    with thread_hooks([(m, hook_for(n), True) for n, m in layers]), torch.inference_mode(), working(dev):
        model.eval()
        def run(start: int, n: int) -> bool:
            model(normalise(dataset.images[idx[start:start + n]].to(dev), spec, size))  # fp32: statistics
            return True

        start = 0
        while start < len(idx):
            before, layers_seen = dict(moments), len(order)
            if unless_out_of_memory(run, start, step):
                start += step
                if on_step is not None:
                    on_step(min(start, len(idx)), len(idx))
                continue
            moments.clear()  # a large model on a small GPU: the layers the batch reached had merged it
            moments.update(before)
            del order[layers_seen:]
            step = halved(step, one_image(spec, size))
    modules = dict(layers)
    out = []
    for name in order:
        count, mean, m2 = moments[name]
        out.append({"name": name, "mean": mean.cpu(), "var": (m2 / count).cpu(),
                    "stored_mean": modules[name].running_mean.detach().cpu().double(),
                    "stored_var": modules[name].running_var.detach().cpu().double()})
    return _remember(key, out)


def _batchnorm_rows(dataset: Dataset, max_images: int) -> torch.Tensor:
    """Up to ``max_images`` images spread evenly over the dataset (it is ordered by class)."""
    return torch.linspace(0, len(dataset) - 1, min(max_images, len(dataset))).round().long().unique()


def batchnorm_images(dataset: Dataset, max_images: int = 512) -> int:
    """How many images ``batchnorm_statistics`` runs on."""
    return len(_batchnorm_rows(dataset, max_images))


def _moments(x: torch.Tensor) -> list:
    """[count, mean, M2] per channel (dim 1) of one batch, float64 out. Two passes over an
    (N·H·W)×C view in the activation's precision: on CPU ``torch.var_mean`` (Welford) took
    ~6× as long, and a float64 copy of every BatchNorm input ~4× the forward pass itself."""
    rows = x.permute(0, *range(2, x.dim()), 1).reshape(-1, x.shape[1])  # a view in channels_last
    if rows.dtype in (torch.float16, torch.bfloat16):
        rows = rows.float()  # a half-precision M2 overflows; bf16 would keep 8 bits of it
    mean = rows.mean(0)
    centred = rows - mean
    return [len(rows), _float64(mean), _float64(centred.mul_(centred).sum(0))]


def _float64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64, where it is: on the CPU for Apple's GPUs, which have no float64 (a copy to
    the CPU elsewhere would make every layer of every batch wait for the GPU)."""
    return x.cpu().double() if x.device.type == "mps" else x.double()


def _merge(a: list, b: list) -> list:
    """Two [count, mean, M2] merged exactly (Chan, Golub & LeVeque's parallel update)."""
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n, delta = na + nb, mb - ma
    return [n, ma + delta * nb / n, m2a + m2b + delta ** 2 * na * nb / n]


def _device_for(model: nn.Module | None, device: torch.device | str | None) -> torch.device:
    """Where features will be computed: on the given model's device, else on ``device``."""
    if model is not None:
        return next(model.parameters()).device
    return device if isinstance(device, torch.device) else pick_device(device)


def _model_on(spec: zoo.ModelSpec, model: nn.Module | None, device) -> tuple[nn.Module, torch.device]:
    """The given (shared, read-only) model or the pretrained one, and the device it lives on."""
    if model is None:
        model = zoo.load(spec, device=device if isinstance(device, torch.device) else pick_device(device))
    return model, next(model.parameters()).device


def _remember(key: str, feats):
    with _MEMORY_LOCK:
        _MEMORY[key] = feats
        while len(_MEMORY) > _MEMORY_ITEMS:
            _MEMORY.popitem(last=False)
    return feats


def embed_2d(features: torch.Tensor, *, seed: int = 0) -> np.ndarray:
    """N×2 map of N×D features: PCA to ≤ 50 dimensions, then t-SNE (scikit-learn)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features.numpy().astype(np.float64)
    n = len(x)
    if n < 5:
        raise ValueError("a map needs at least 5 images")
    x = PCA(n_components=min(50, n - 1, x.shape[1]), random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (n - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
