"""Fine-tuning trials: a typed config in, a result with history, metrics and timings out.

Speed design (DESIGN §6): the dataset moves to the device once as uint8 and is augmented there;
frozen blocks run without autograd; a linear probe (``freeze="all"``) runs the backbone once
over the data, caches the features, then trains only the new head on them.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset, DatasetError
from tlcore.device import autocast, inference_batch, pick_device
from tlcore.settings import demo_mode, limits
from tlcore.zoo.split import split as split_model

Freeze = int | Literal["all"]
# The choices a trial offers, defined once: TrialConfig checks them, the page and the CLI list them.
OPTIMIZERS = ("sgd", "adamw")
AUGMENTATIONS = ("flip", "crop")
BN_MODES = ("frozen", "train")  # BatchNorm statistics in frozen blocks: kept, or updated on the data
PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bf16 autocast on CUDA, fp32 elsewhere
DEFAULT_BATCH = 32  # small datasets need steps: 5 epochs of 250 images at 64 are only 20 updates


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """One trial. Rates are per step; ``freeze`` counts leading blocks of the zoo's block list."""

    model: str  # registry key or model name
    pretrained: bool = True  # False: the same architecture from scratch (random weights)
    freeze: Freeze = "all"  # 0 … n_blocks-1, or "all" = only a new head (linear probe)
    lr: float = 1e-2  # the new head's learning rate
    backbone_lr_mult: float = 0.1  # unfrozen backbone blocks learn at lr × this
    optimizer: Literal["sgd", "adamw"] = "sgd"
    epochs: int = 5
    batch_size: int = DEFAULT_BATCH
    augment: tuple[str, ...] = ("flip",)  # any of "flip", "crop"
    bn_mode: Literal["frozen", "train"] = "frozen"  # BatchNorm statistics in frozen blocks
    seed: int = 0
    precision: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA
    # With freeze="all": the block whose pooled output the new classifier reads. An earlier block
    # is the seeds' advice for a small dataset far from ImageNet.
    probe_block: str = features.PENULTIMATE

    def check(self, n_blocks: int, block_names: Sequence[str] = ()) -> None:
        """Raise ValueError naming the valid choices (``block_names`` also checks ``probe_block``)."""
        if self.freeze != "all" and not (isinstance(self.freeze, int) and 0 <= self.freeze < n_blocks):
            raise ValueError(f"freeze must be 0…{n_blocks - 1} or 'all', got {self.freeze!r}")
        if self.probe_block != features.PENULTIMATE:
            if self.freeze != "all":
                raise ValueError("a classifier on an earlier block's features needs freeze='all'")
            choices = [b for b in block_names if b != "head"]
            if block_names and self.probe_block not in choices:
                raise ValueError(f"unknown block {self.probe_block!r}; choose one of: "
                                 f"{', '.join(choices)} or {features.PENULTIMATE}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        cap = limits().max_epochs
        if self.epochs > cap:
            raise ValueError(f"at most {cap} epochs per trial here{' (demo mode)' if demo_mode() else ''}")
        if not (self.lr > 0 and self.backbone_lr_mult >= 0 and math.isfinite(self.lr)):
            raise ValueError("learning rates must be positive")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("bn_mode", self.bn_mode, BN_MODES),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        bad = set(self.augment) - set(AUGMENTATIONS)
        if bad:
            raise ValueError(f"unknown augmentation {sorted(bad)}; choose from {', '.join(AUGMENTATIONS)}")


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class TrialResult:
    config: dict
    classes: list[str]
    history: list[EpochStats]
    val_acc: float
    confusion: list[list[int]]  # rows: true class, columns: predicted
    trainable_params: int
    total_params: int
    timings: dict = field(default_factory=dict)  # one-off seconds and per-epoch seconds
    state_dict: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("state_dict")
        return out


class TrialCancelled(Exception):
    """The caller's ``should_stop`` said so; the history so far is in ``args[0]``."""


def replace_head(model: nn.Module, num_classes: int, n_out: int) -> str:
    """Swap the ImageNet classifier for a fresh one with ``n_out`` outputs; returns its path."""
    path = features.classifier_path(model, num_classes)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, n_out)
    else:  # SqueezeNet's 1×1 convolution classifier
        new = nn.Conv2d(old.in_channels, n_out, kernel_size=1)
    setattr(parent, name, new.to(next(old.parameters()).device))
    return path


def _freeze(model: nn.Module, spec: zoo.ModelSpec, cfg: TrialConfig, head_path: str) -> list[nn.Module]:
    """Set requires_grad; returns the frozen modules (for the BatchNorm mode)."""
    if cfg.freeze == "all":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(head_path + ".")
        return [model]
    frozen = []
    for block in spec.blocks[: cfg.freeze]:
        for path in block.members:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                model.get_parameter(path).requires_grad = False
                continue
            module.requires_grad_(False)
            frozen.append(module)
    return frozen


def _live_batchnorms(model: nn.Module, frozen: list[nn.Module]) -> list[nn.Module]:
    """BatchNorm layers whose statistics train: those outside ``frozen``."""
    keep = {id(m) for module in frozen for m in module.modules()}
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in keep]


def _restart_batchnorm_averages(layers: list[nn.Module]) -> None:
    """Make each live BatchNorm's running statistics the plain average of this epoch's batches.

    Evaluation uses running statistics. With the momentum TF-ported weights carry (0.01 for
    EfficientNet-Lite and MobileNetV3) a few hundred steps leave them mostly ImageNet's, and
    validation accuracy collapses towards chance while training accuracy climbs. An epoch
    average matches the weights being evaluated and costs no extra pass.
    """
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average since the reset


def _optimizer(model: nn.Module, cfg: TrialConfig, head_path: str = "") -> torch.optim.Optimizer:
    """Head parameters (all of ``model`` when ``head_path`` is empty) at ``lr``, unfrozen backbone
    parameters at ``lr × backbone_lr_mult``."""
    def in_head(name: str) -> bool:
        return not head_path or name.startswith(head_path + ".")

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if in_head(n)], "lr": cfg.lr}]
    body = [p for n, p in trainable if not in_head(n)]
    if body and cfg.backbone_lr_mult > 0:
        groups.append({"params": body, "lr": cfg.lr * cfg.backbone_lr_mult})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=0.01)
    return torch.optim.SGD(groups, momentum=0.9, weight_decay=1e-4)


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


def _autocast(device: torch.device, cfg: TrialConfig):
    return autocast(device, enabled=cfg.precision in ("auto", "bfloat16"))


def _run_epoch(model, ys, idx, *, train, cfg, opt, device, gen, prepare, frozen, should_stop):
    """One pass over ``idx``; returns (loss, accuracy, predictions)."""
    model.train(train)
    if train:
        still = frozen if cfg.bn_mode == "frozen" else []
        for module in still:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        _restart_batchnorm_averages(_live_batchnorms(model, still))
    order = idx[torch.randperm(len(idx), generator=gen, device="cpu")] if train else idx
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    preds = []
    for start in range(0, len(order), cfg.batch_size):
        if should_stop is not None and should_stop():
            raise TrialCancelled()
        batch = order[start:start + cfg.batch_size].to(device)
        x, y = prepare(batch, train), ys[batch]
        with torch.set_grad_enabled(train), _autocast(device, cfg):
            out = model(x)
            logits = getattr(out, "logits", out)  # Inception returns (logits, aux) in training
            loss = nn.functional.cross_entropy(logits.float(), y)
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # Sums stay on the device: no host synchronisation per batch.
        total_loss += loss.detach() * len(batch)
        pred = logits.detach().argmax(1)
        correct += (pred == y).sum()
        preds.append(pred)
    n = max(1, len(order))
    return (total_loss / n).item(), (correct.float() / n).item(), torch.cat(preds) if preds else None


def run_trial(cfg: TrialConfig, dataset: Dataset, *, model: nn.Module | None = None,
              device: torch.device | str | None = None, keep_weights: bool = False,
              on_epoch: Callable[[EpochStats], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> TrialResult:
    """Train per ``cfg`` on ``dataset``; ``model`` (e.g. shared by the app) is copied, never
    trained in place. Raises DatasetError for data that cannot be validated honestly."""
    started = time.perf_counter()
    spec = zoo.get_spec(cfg.model)
    cfg.check(len(spec.blocks), [b.name for b in spec.blocks])
    if len(dataset.val_idx) == 0:
        raise DatasetError("no validation images: every class needs at least 2 images "
                           "(one to train on, one to check on)")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if model is not None and cfg.pretrained:
        # A linear probe only reads the backbone (its hooks are removed after): the shared model
        # serves as it is, unless it would have to move to another device. Anything else trains it.
        read_only = cfg.freeze == "all" and next(model.parameters()).device == dev
        base = model if read_only else copy.deepcopy(model)
    else:
        base = zoo.load(spec, device="cpu", pretrained=cfg.pretrained)
    base = base.to(dev)
    total_params = sum(p.numel() for p in base.parameters())
    n_classes = len(dataset.classes)
    size = features.input_size(spec, dataset)
    _preflight(base, spec, dataset, size, dev)
    timings: dict = {}

    if cfg.freeze == "all":
        trainable, head_path, frozen, prepare = _linear_probe(cfg, spec, dataset, base, dev, timings)
        opt = _optimizer(trainable, cfg)
    else:
        head_path = replace_head(base, spec.num_classes, n_classes)
        frozen = _freeze(base, spec, cfg, head_path)
        trainable, prepare = _prefix_cached(cfg, spec, dataset, base, dev, gen, size, timings)
        opt = _optimizer(base, cfg, head_path)
    ys = dataset.labels.to(dev)
    history: list[EpochStats] = []
    preds = None
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        try:
            tr_loss, tr_acc, _ = _run_epoch(trainable, ys, dataset.train_idx, train=True, cfg=cfg,
                                            opt=opt, device=dev, gen=gen, prepare=prepare, frozen=frozen,
                                            should_stop=should_stop)
            va_loss, va_acc, preds = _run_epoch(trainable, ys, dataset.val_idx, train=False, cfg=cfg,
                                                opt=None, device=dev, gen=gen, prepare=prepare,
                                                frozen=frozen, should_stop=should_stop)
        except TrialCancelled:
            raise TrialCancelled(history) from None
        stats = EpochStats(epoch, tr_loss, tr_acc, va_loss, va_acc, time.perf_counter() - t0)
        history.append(stats)
        timings.setdefault("first_epoch_s", time.perf_counter() - started)  # Run → first point
        if on_epoch is not None:
            on_epoch(stats)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    truth = dataset.labels[dataset.val_idx]
    confusion.index_put_((truth, preds.cpu()), torch.ones_like(truth), accumulate=True)
    timings["per_epoch_s"] = [h.seconds for h in history]
    timings["total_s"] = time.perf_counter() - started
    state = None
    owner = trainable if cfg.freeze == "all" else base  # the tail shares the base model's modules
    if keep_weights:
        state = {k: v.detach().cpu() for k, v in owner.state_dict().items()}
    return TrialResult(config=asdict(cfg), classes=list(dataset.classes), history=history,
                       val_acc=history[-1].val_acc, confusion=confusion.tolist(),
                       trainable_params=sum(p.numel() for p in owner.parameters() if p.requires_grad),
                       total_params=total_params, timings=timings, state_dict=state)


@torch.no_grad()
def _preflight(model: nn.Module, spec: zoo.ModelSpec, dataset: Dataset, size: int, dev: torch.device) -> None:
    """One image through the model first: a resolution the architecture cannot take becomes a
    clear message instead of a shape error deep inside training."""
    model.eval()
    try:
        model(features.normalise(dataset.images[:1].to(dev), spec, size))
    except RuntimeError as err:
        raise DatasetError(f"{spec.model} cannot take {size}px images ({str(err).splitlines()[0]}); "
                           "load the dataset at a larger resolution") from None


def _linear_probe(cfg, spec, dataset, base, dev, timings):
    """The backbone runs once; epochs touch only the cached features (penultimate by default)."""
    t0 = time.perf_counter()
    view = "center|pretrained" if cfg.pretrained else f"center|random-seed{cfg.seed}"
    feats = features.extract(spec, dataset, block=cfg.probe_block, model=base, device=dev, view=view).to(dev)
    timings["features_s"] = time.perf_counter() - t0
    head = nn.Linear(feats.shape[1], len(dataset.classes)).to(dev)
    return head, "", [], lambda idx, train: feats[idx]


# Cached prefix activations may use at most this much memory (bytes); beyond it, run it all.
_CACHE_BUDGET = {"cpu": 3 * 2**30, "cuda": 16 * 2**30, "mps": 2 * 2**30}


def _views(cfg: TrialConfig) -> int:
    """Augmented views cached per image when the prefix is cached (view 0 is the plain image)."""
    if not cfg.augment:
        return 1
    return 4 if "crop" in cfg.augment else 2


def _prefix_cached(cfg, spec, dataset, base, dev, gen, size, timings):
    """(module to train, prepare): the frozen prefix runs once per view when it can be cut off."""
    images = dataset.images.to(dev)  # uint8 on the device: a quarter of float32's memory
    parts = None
    if cfg.freeze and cfg.bn_mode == "frozen":  # BN statistics that train need the prefix live
        parts = split_model(base, spec.blocks, cfg.freeze)
    if parts is not None:
        prefix, tail = parts
        key = _prefix_key(cfg, spec, dataset, size, dev)
        store = _PREFIX_CACHE.get(key) or _PrefixStore.create(prefix, images, cfg, spec, size, dev)
        if store is not None:
            _PREFIX_CACHE.put(key, store)
            timings["prefix_cached"] = True
            timings["prefix_views"] = len(store.acts)
            timings["prefix_views_reused"] = store.ready
            return tail, _ViewSampler(store, prefix, images, dataset, cfg, spec, size, dev, gen)
    timings["prefix_cached"] = False

    def prepare(idx, train):
        x = images[idx]
        if train and cfg.augment:
            x = augment(x.float(), cfg.augment, _device_gen(dev, gen))
        return features.normalise(x, spec, size)

    return base, prepare


class _PrefixStore:
    """Frozen-prefix activations of every image, V views (view 0 plain, the others augmented).
    ``ready`` views are complete; the rest are filled while training first needs them. The
    tensors keep the memory format the prefix produced: on CPU that is channels_last, and NCHW
    copies make the tail's backward 2× slower."""

    def __init__(self, acts: list[torch.Tensor]):
        self.acts = acts
        self.ready = 0

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.acts)

    @classmethod
    @torch.no_grad()
    def create(cls, prefix, images, cfg, spec, size, dev) -> _PrefixStore | None:
        """Empty buffers, or None when they would not fit in the memory budget."""
        views = _views(cfg)
        prefix.eval()
        with _autocast(dev, cfg):
            probe = prefix(features.normalise(images[:1], spec, size))
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        need = views * len(images) * probe.numel() * torch.tensor([], dtype=dtype).element_size()
        if need > _CACHE_BUDGET.get(dev.type, 2**30):
            return None
        fmt = _memory_format(probe)
        return cls([torch.empty((len(images), *probe.shape[1:]), dtype=dtype, device=dev)
                    .contiguous(memory_format=fmt) for _ in range(views)])


class _ViewSampler:
    """``prepare`` for a cached prefix. Training epoch e uses view e and computes it on the way
    if it is not ready (epoch 1 computes the plain view, for validation too); once all V views
    exist, every sample draws one at random. So the first point on the curve costs one prefix
    pass, not V, and a short trial never computes views it will not use. Views are augmented
    with their own seeded generator, so a reused store gives the same trial as a fresh one."""

    def __init__(self, store, prefix, images, dataset, cfg, spec, size, dev, gen):
        self.store, self.prefix, self.images = store, prefix, images
        self.cfg, self.spec, self.size, self.dev, self.gen = cfg, spec, size, dev, gen
        self.n_train, self.n_val = len(dataset.train_idx), len(dataset.val_idx)
        self.served_train = self.served_val = 0  # python counters: no host synchronisation
        self.view_gens: dict[int, torch.Generator] = {}

    def __call__(self, idx: torch.Tensor, train: bool) -> torch.Tensor:
        views = len(self.store.acts)
        if not train:
            out = self._view(0, idx)
            self.served_val += len(idx)
            if self.store.ready == 0 and self.served_val >= self.n_val and self.served_train >= self.n_train:
                self.store.ready = 1  # plain view: every training and validation image done
            return out
        epoch = self.served_train // max(1, self.n_train)
        self.served_train += len(idx)
        if epoch < views:
            out = self._view(epoch, idx)
            if epoch >= 1 and epoch == self.store.ready and self.served_train % self.n_train == 0:
                self.store.ready = epoch + 1
            return out
        pick = torch.randint(0, views, (len(idx),), device=idx.device, generator=_device_gen(self.dev, self.gen))
        return _gather(self.store.acts, idx, pick)

    def _view(self, v: int, idx: torch.Tensor) -> torch.Tensor:
        acts = self.store.acts[v]
        if v < self.store.ready:
            return acts[idx].contiguous(memory_format=_memory_format(acts))
        self.prefix.eval()
        with torch.no_grad(), _autocast(self.dev, self.cfg):
            x = self.images[idx]
            if v > 0:
                x = augment(x.float(), self.cfg.augment, self._view_gen(v))
            x = features.normalise(x, self.spec, self.size)
            step = inference_batch(self.dev)  # CPU caches favour small inference batches
            out = torch.cat([self.prefix(x[i:i + step]).to(acts.dtype) for i in range(0, len(x), step)])
        acts[idx] = out
        return out.contiguous(memory_format=_memory_format(acts))

    def _view_gen(self, v: int) -> torch.Generator:
        if v not in self.view_gens:
            self.view_gens[v] = torch.Generator(device=self.dev).manual_seed(self.cfg.seed * 1009 + v)
        return self.view_gens[v]


class _RecentStores:
    """The last few trials' prefix stores, so a second trial at the same freeze depth (another
    learning rate, more epochs) starts training at once. Frozen pretrained blocks give the same
    activations every time; from-scratch weights and augmented views depend on the seed, which
    is part of the key. Together they stay within one trial's memory budget."""

    def __init__(self, items: int = 2):
        self._items = items
        self._entries: OrderedDict[tuple, _PrefixStore] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _PrefixStore | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            return None

    def put(self, key: tuple, store: _PrefixStore) -> None:
        with self._lock:
            self._entries[key] = store
            self._entries.move_to_end(key)
            budget = _CACHE_BUDGET.get(key[-1].split(":")[0], 2**30)
            while len(self._entries) > 1 and (len(self._entries) > self._items or
                                              sum(s.nbytes for s in self._entries.values()) > budget):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_PREFIX_CACHE = _RecentStores()


def _prefix_key(cfg: TrialConfig, spec, dataset: Dataset, size: int, dev: torch.device) -> tuple:
    weights = "pretrained" if cfg.pretrained else f"random-{cfg.seed}"
    return (spec.key, weights, dataset.fingerprint, cfg.freeze, size, tuple(sorted(cfg.augment)),
            cfg.seed, cfg.precision, str(dev))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _gather(acts: list[torch.Tensor], idx: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
    """Rows ``idx`` of view ``pick[i]`` each (view 0 when ``pick`` is None), in the cache's format."""
    batch = acts[0][idx]
    if pick is not None:
        for v in range(1, len(acts)):
            chosen = pick == v
            if chosen.any():
                batch[chosen] = acts[v][idx[chosen]]
    return batch.contiguous(memory_format=_memory_format(acts[0]))


def _device_gen(device: torch.device, cpu_gen: torch.Generator) -> torch.Generator | None:
    # Augmentation randomness is drawn on the device; seeded from the trial's CPU generator.
    if device.type == "cpu":
        return cpu_gen
    g = torch.Generator(device=device)
    g.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=cpu_gen)))
    return g
