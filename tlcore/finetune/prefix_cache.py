"""The frozen prefix, run once: its activations per image and view, kept for the next trial.

Frozen leading blocks give the same output every epoch for the same input, so a trial computes
them once per augmented view and then trains only the tail (DESIGN §6, "run frozen prefixes once").
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset
from tlcore.device import autocast, halved, inference_batch, mixed_dtype, unless_out_of_memory
from tlcore.finetune.augment import augment, device_generator
from tlcore.finetune.config import TrialConfig
from tlcore.finetune.engine import training_dtype

# Cached prefix activations may use at most this much memory (bytes); beyond it, run it all.
BUDGET = {"cpu": 3 * 2**30, "cuda": 16 * 2**30, "mps": 2 * 2**30}
# …and on a GPU at most this share of its memory: 16 GiB is most of an 8–24 GB card, where the
# trial's own model, batches and gradients must fit beside them.
GPU_SHARE = 0.3


def budget(dev: torch.device) -> int:
    """Bytes of prefix activations ``dev`` may keep, the stores kept for later trials included."""
    cap = BUDGET.get(dev.type, 2**30)
    if dev.type == "cuda":
        cap = min(cap, int(GPU_SHARE * torch.cuda.get_device_properties(dev).total_memory))
    return cap


# On a CPU each augmented view is a whole pass of the frozen prefix (at 224 px about four epochs of
# the last block's training), and a short trial pays it once per view: 4 views of Lite0 over 256
# images took 43 s where 2 took 25 s. bench/view_accuracy.py, last block trained with flips and
# crops, 16 trials (3–4 seeds of shapes at 224 px, textures at 128, faces at 96, digits at 64 and
# 96; 5 and 10 epochs): 2 views − 4 views averaged −0.001 in validation accuracy (from −0.050 to
# +0.034, at most three validation images), so a CPU keeps two: the plain images and one augmented
# view. A GPU computes a view in a fraction of an epoch and keeps four.
CPU_MAX_VIEWS = 2


def views(cfg: TrialConfig, dev: torch.device) -> int:
    """Views cached per image (view 0 is the plain image, the others augmented)."""
    if not cfg.augment:
        return 1
    wanted = 4 if "crop" in cfg.augment else 2
    return wanted if _whole_views(dev) else min(wanted, CPU_MAX_VIEWS)  # where a view is not one quick pass


def frozen_dtype(cfg: TrialConfig, dev: torch.device) -> torch.dtype:
    """What the frozen layers compute in: the device's mixed precision unless the trial asks for float32."""
    return frozen_autocast(cfg, dev) or torch.float32


def frozen_autocast(cfg: TrialConfig, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype of the frozen layers' pass; None: float32."""
    return mixed_dtype(dev) if cfg.mixed_precision else None


def storage_dtype(cfg: TrialConfig, dev: torch.device, size: int) -> torch.dtype:
    """What the cached activations are kept in: what the tail trains in, so it is never handed bf16
    tensors to train on in float32 (a float32 trial; a CPU's below CPU_MIXED_TRAINING_MIN_PX, whose
    values are bf16's)."""
    return training_dtype(cfg, dev, size) or torch.float32


def _autocast(dev: torch.device, cfg: TrialConfig):
    return autocast(dev, enabled=cfg.mixed_precision)


class PrefixStore:
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
    def create(cls, prefix: nn.Module, images: torch.Tensor, cfg: TrialConfig, spec: zoo.ModelSpec,
               size: int, dev: torch.device) -> PrefixStore | None:
        """Empty buffers, or None when they would not fit in the memory budget."""
        prefix.eval()
        with _autocast(dev, cfg):
            probe = prefix(features.normalise(images[:1], spec, size))
        dtype = storage_dtype(cfg, dev, size)
        n_views = views(cfg, dev)
        need = n_views * len(images) * probe.numel() * dtype.itemsize
        if need > budget(dev):
            return None
        RECENT.make_room(need, dev)  # the older stores go first, not after: both may not fit
        buffers = unless_out_of_memory(_buffers, n_views, (len(images), *probe.shape[1:]), dtype, dev,
                                       _memory_format(probe))
        return None if buffers is None else cls(buffers)  # None: fuller than the budget allows, run it all


def _buffers(n: int, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device,
             fmt: torch.memory_format) -> list[torch.Tensor]:
    return [torch.empty(shape, dtype=dtype, device=dev).contiguous(memory_format=fmt) for _ in range(n)]


class ViewSampler:
    """``prepare`` for a cached prefix. Training epoch e uses view e and computes it on the way
    if it is not ready (epoch 1 computes the plain view, for validation too); once all V views
    exist, every sample draws one at random. So the first point on the curve costs one prefix
    pass, not V, and a short trial never computes views it will not use. Views are augmented
    with their own seeded generator, so a reused store gives the same trial as a fresh one.
    On a CPU a view is computed batch by batch as training meets it; on an accelerator the whole
    view at once, in inference-sized batches (Lite0's prefix on an H200: 11,000 images/s at the
    training batch of 64, 12,900 at 512), without waiting for the tail's steps in between."""

    def __init__(self, store: PrefixStore, prefix: nn.Module, images: torch.Tensor, dataset: Dataset,
                 cfg: TrialConfig, spec: zoo.ModelSpec, size: int, dev: torch.device, gen: torch.Generator):
        self.store, self.prefix, self.images = store, prefix, images
        self.cfg, self.spec, self.size, self.dev, self.gen = cfg, spec, size, dev, gen
        self.n_train, self.n_val = len(dataset.train_idx), len(dataset.val_idx)
        self.train_idx = dataset.train_idx.to(dev)
        self.whole_views = _whole_views(dev)
        # Images per prefix forward pass (CPU caches favour small ones); halved for good when a
        # whole view's piece runs out of memory.
        self.step = inference_batch(dev, size)
        self.served_train = self.served_val = 0  # python counters: no host synchronisation
        self.view_gens: dict[int, torch.Generator] = {}

    def __call__(self, idx: torch.Tensor, train: bool) -> torch.Tensor:
        """The model's input for ``idx``. Idempotent until ``served`` counts the batch: a batch
        retried after out-of-memory gets the same view and rewrites the same rows."""
        n_views = len(self.store.acts)
        if not train:
            return self._view(0, idx)
        epoch = self.served_train // max(1, self.n_train)
        if epoch < n_views:
            return self._view(epoch, idx)
        pick = torch.randint(0, n_views, (len(idx),), device=idx.device,
                             generator=device_generator(self.dev, self.gen))
        return _gather(self.store.acts, idx, pick)

    def served(self, n: int, train: bool) -> None:
        """Count a batch that went through; a view is ready once every image it needs was served."""
        if not train:
            self.served_val += n
            if self.store.ready == 0 and self.served_val >= self.n_val and self.served_train >= self.n_train:
                self.store.ready = 1  # plain view: every training and validation image done
            return
        epoch = self.served_train // max(1, self.n_train)
        self.served_train += n
        if 1 <= epoch == self.store.ready and epoch < len(self.store.acts) and self.served_train % self.n_train == 0:
            self.store.ready = epoch + 1

    def _view(self, v: int, idx: torch.Tensor) -> torch.Tensor:
        acts = self.store.acts[v]
        if self.whole_views and v == self.store.ready:
            self._fill(v)
        if v < self.store.ready:
            return acts[idx].contiguous(memory_format=_memory_format(acts))
        out = self._prefix_of(v, idx, self.step)
        acts[idx] = out
        return out.contiguous(memory_format=_memory_format(acts))

    def _fill(self, v: int) -> None:
        """View ``v`` of every image it serves (view 0: all, for validation too; the others: the
        training images), then it is ready. Out of memory: the piece again in smaller ones, its
        augmentation drawn again from where it started."""
        rows = torch.arange(len(self.images), device=self.dev) if v == 0 else self.train_idx
        start = 0
        while start < len(rows):
            piece = rows[start:start + self.step]
            drawn = self._view_gen(v).get_state() if v > 0 else None
            out = unless_out_of_memory(self._prefix_of, v, piece, self.step)
            if out is not None:
                self.store.acts[v][piece] = out
                start += len(piece)
                continue
            if drawn is not None:
                self._view_gen(v).set_state(drawn)
            self.step = halved(self.step, f"image in the frozen blocks at {self.size} px: load the dataset "
                                          "at a smaller resolution or freeze fewer blocks")
        self.store.ready = v + 1

    @torch.no_grad()
    def _prefix_of(self, v: int, idx: torch.Tensor, step: int) -> torch.Tensor:
        """The prefix's output for images ``idx`` in view ``v``, ``step`` images per forward pass."""
        self.prefix.eval()
        x = self.images[idx]
        if v > 0:  # outside autocast, as the live path: a bf16 crop grid would move samples ~0.5 px at 224 px
            x = augment(x.float(), self.cfg.augment, self._view_gen(v))
        x = features.normalise(x, self.spec, self.size)
        with _autocast(self.dev, self.cfg):
            return torch.cat([self.prefix(x[i:i + step]).to(self.store.acts[v].dtype) for i in range(0, len(x), step)])

    def _view_gen(self, v: int) -> torch.Generator:
        if v not in self.view_gens:
            self.view_gens[v] = torch.Generator(device=self.dev).manual_seed(self.cfg.seed * 1009 + v)
        return self.view_gens[v]


def _whole_views(dev: torch.device) -> bool:
    """Whether ``dev`` computes a view in one go, between epochs (an accelerator), not batch by
    batch as training meets it (a CPU, where each view is a whole prefix pass)."""
    return dev.type != "cpu"


class RecentStores:
    """The last few trials' prefix stores, so a second trial at the same freeze depth (another
    learning rate, more epochs) starts training at once. Frozen pretrained blocks give the same
    activations every time; from-scratch weights and augmented views depend on the seed, which
    is part of the key. Together they stay within one trial's memory budget."""

    def __init__(self, items: int = 2):
        self._items = items
        self._entries: OrderedDict[tuple, PrefixStore] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> PrefixStore | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            return None

    def put(self, key: tuple, store: PrefixStore) -> None:
        with self._lock:
            self._entries[key] = store
            self._entries.move_to_end(key)
            while len(self._entries) > self._items:
                self._entries.popitem(last=False)
            self._fit(0, torch.device(key[-1]), keep=key)

    def make_room(self, nbytes: int, dev: torch.device) -> None:
        """Let go of the oldest stores on ``dev``'s kind of device until ``nbytes`` more fit its budget."""
        with self._lock:
            self._fit(nbytes, dev)

    def _fit(self, nbytes: int, dev: torch.device, keep: tuple | None = None) -> None:
        """(Lock held.) The oldest stores on ``dev``'s kind of device go, ``keep`` never, until
        they and ``nbytes`` more fit its budget."""
        mine = [k for k in self._entries if torch.device(k[-1]).type == dev.type]
        held, cap = sum(self._entries[k].nbytes for k in mine), budget(dev)
        for k in [k for k in mine if k != keep]:
            if held + nbytes <= cap:
                break
            held -= self._entries.pop(k).nbytes

    def newest(self) -> PrefixStore | None:
        with self._lock:
            return next(reversed(self._entries.values()), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


RECENT = RecentStores()


def key(cfg: TrialConfig, spec: zoo.ModelSpec, dataset: Dataset, size: int, dev: torch.device) -> tuple:
    """What the activations depend on (the device last: it picks the memory budget). The split
    too: augmented views hold the training images only, and the fingerprint (pixels, labels,
    classes) is the same for another validation fraction."""
    weights = "pretrained" if cfg.pretrained else f"random-{cfg.seed}"
    split = hashlib.sha256(dataset.train_idx.numpy().tobytes()).hexdigest()[:16]
    return (spec.key, weights, dataset.fingerprint, split, cfg.freeze, size, tuple(sorted(cfg.augment)),
            cfg.seed, frozen_dtype(cfg, dev), str(dev))  # the precision it resolves to, not the request


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _gather(acts: list[torch.Tensor], idx: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
    """Rows ``idx`` of view ``pick[i]`` each (view 0 when ``pick`` is None), in the cache's format."""
    batch = acts[0][idx]
    if pick is not None:
        # torch.where, not a boolean mask: a mask's row count is only known after the GPU has
        # caught up, so every batch would wait for it.
        for v in range(1, len(acts)):
            chosen = (pick == v).view(-1, *[1] * (batch.dim() - 1))
            batch = torch.where(chosen, acts[v][idx], batch)
    return batch.contiguous(memory_format=_memory_format(acts[0]))
