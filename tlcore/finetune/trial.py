"""``run_trial``: a config and a dataset in, a result with history, metrics and timings out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from tlcore import features, zoo
from tlcore.data import Dataset, DatasetError
from tlcore.device import OtherWork, TooLargeForDevice, dtype_name, out_of_memory, pick_device, same_device
from tlcore.finetune import optim, prefix_cache
from tlcore.finetune.augment import augment, device_generator
from tlcore.finetune.config import (
    EpochStats,
    Timings,
    TrialCancelled,
    TrialConfig,
    TrialDiverged,
    TrialResult,
)
from tlcore.finetune.engine import Loop, Prepare, confusion, evaluate, train_one_epoch, training_dtype
from tlcore.finetune.surgery import freeze, head_params, replace_head
from tlcore.fold import folded
from tlcore.hooks import private_copy
from tlcore.zoo.split import split as split_model


def check_inputs(cfg: TrialConfig, dataset: Dataset) -> None:
    """What ``run_trial`` refuses before any work (ValueError, DatasetError): a caller that keeps
    runs checks first, so a mistake is a message and not a failed run in the history."""
    cfg.check()
    if len(dataset.val_idx) == 0:
        raise DatasetError("no validation images: every class needs at least 2 images "
                           "(one to train on, one to check on)")


def run_trial(cfg: TrialConfig, dataset: Dataset, *, model: nn.Module | None = None,
              device: torch.device | str | None = None, keep_weights: bool = False,
              on_epoch: Callable[[EpochStats], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> TrialResult:
    """Train per ``cfg`` on ``dataset``; ``model`` (e.g. shared by the app) is copied, never
    trained in place. Raises DatasetError for data that cannot be validated honestly."""
    started = time.perf_counter()
    spec = zoo.get_spec(cfg.model)
    check_inputs(cfg, dataset)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    automatic, given_lr = cfg.batch_size is None, cfg.lr
    cfg = cfg.for_run(len(dataset.train_idx), dev)  # an automatic batch, and rates to match
    torch.manual_seed(cfg.seed)  # a model from scratch draws its weights here
    gen = torch.Generator().manual_seed(cfg.seed)
    others = OtherWork(dev)
    base = _base_model(cfg, spec, model, dev)
    # Again: building a pretrained model draws random numbers before its weights load, and the app
    # passes one already built. The new head must start from the same weights either way (the same
    # seed gave 0.949 in the CLI and 0.974 in the app).
    torch.manual_seed(cfg.seed)
    # The network as trained: the backbone and the new head, not the ImageNet classifier it replaces.
    backbone_params = sum(p.numel() for p in base.parameters()) - head_params(base, spec.num_classes)
    size = features.input_size(spec, dataset)
    _preflight(base, spec, dataset, size, dev)
    trains_in = training_dtype(cfg, dev, size)
    timings = Timings(precision=dtype_name(prefix_cache.frozen_dtype(cfg, dev)),
                      trained_in=dtype_name(trains_in or torch.float32))

    if cfg.freeze == "all":
        trainable, prepare = _linear_probe(cfg, spec, dataset, base, dev, timings)
        opt, frozen = optim.optimizer(trainable, cfg), []
        new_head = trainable
    else:
        head_path = replace_head(base, spec.num_classes, len(dataset.classes))
        new_head = base.get_submodule(head_path)
        frozen = freeze(base, spec, cfg)
        trainable, prepare = _prefix_once_or_live(cfg, spec, dataset, base, dev, gen, size, timings)
        opt = optim.optimizer(base, cfg, head_path)
    sched = optim.Schedule(opt, cfg, images_per_epoch=len(dataset.train_idx))
    loop = Loop(trainable, dataset.labels.to(dev), prepare, cfg, dev, should_stop,
                served=getattr(prepare, "served", None),  # a cached prefix counts what it computed
                rates_follow_batch=sched if automatic else None, dtype=trains_in)
    timings.setup_s = time.perf_counter() - started
    history: list[EpochStats] = []
    preds = None
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        try:
            tr_loss, tr_acc = train_one_epoch(loop, dataset.train_idx, opt=opt, sched=sched, frozen=frozen, gen=gen)
            va_loss, va_acc, preds = evaluate(loop, dataset.val_idx)
        except TrialCancelled:
            raise TrialCancelled(history) from None
        stats = EpochStats(epoch, tr_loss, tr_acc, va_loss, va_acc, time.perf_counter() - t0)
        history.append(stats)
        if timings.first_epoch_s is None:
            timings.first_epoch_s = time.perf_counter() - started  # Run → first point
        if on_epoch is not None:
            on_epoch(stats)
        if not (math.isfinite(tr_loss) or math.isfinite(va_loss)):
            raise TrialDiverged(epoch, given_lr)  # the rate as set, not as scaled with the batch
    timings.per_epoch_s = [h.seconds for h in history]
    timings.under_load = others.seen()
    timings.batch_size = loop.batch_size
    timings.total_s = time.perf_counter() - started
    # The tail shares the base model's modules; a probe keeps its head as a Linear on raw features.
    owner = trainable.folded() if cfg.freeze == "all" else base
    state = {k: v.detach().cpu() for k, v in owner.state_dict().items()} if keep_weights else None
    return TrialResult(config=asdict(cfg), classes=list(dataset.classes), history=history,
                       val_acc=history[-1].val_acc, confusion=_confusion(dataset, preds),
                       trainable_params=sum(p.numel() for p in owner.parameters() if p.requires_grad),
                       total_params=backbone_params + sum(p.numel() for p in new_head.parameters()),
                       timings=timings, state_dict=state, input_px=size, val_split=dataset.split_digest())


def _base_model(cfg: TrialConfig, spec: zoo.ModelSpec, model: nn.Module | None, dev: torch.device) -> nn.Module:
    if model is not None and cfg.pretrained:
        # A linear probe only reads the backbone (its hooks are removed after): the shared model
        # serves as it is, unless it would have to move to another device. Anything else trains it.
        read_only = cfg.freeze == "all" and same_device(next(model.parameters()).device, dev)
        base = model if read_only else private_copy(model)
    else:
        base = zoo.load(spec, device="cpu", pretrained=cfg.pretrained)
    return base.to(dev)


def _confusion(dataset: Dataset, preds: torch.Tensor) -> list[list[int]]:
    """Rows: true class, columns: predicted, over the validation images."""
    return confusion(dataset.labels[dataset.val_idx], preds, len(dataset.classes)).tolist()


@torch.no_grad()
def _preflight(model: nn.Module, spec: zoo.ModelSpec, dataset: Dataset, size: int, dev: torch.device) -> None:
    """One image through the model first: a resolution the architecture cannot take becomes a
    clear message instead of a shape error deep inside training."""
    model.eval()
    try:
        model(features.normalise(dataset.images[:1].to(dev), spec, size))
    except RuntimeError as err:
        if out_of_memory(err):  # not the resolution's fault
            raise TooLargeForDevice("out of memory even for one image: load the dataset at a smaller resolution "
                                    "or choose a smaller model") from None
        raise DatasetError(f"{spec.model} cannot take {size}px images ({str(err).splitlines()[0]}); "
                           "load the dataset at a larger resolution") from None


def _linear_probe(cfg, spec, dataset, base, dev, timings: Timings) -> tuple[nn.Module, Prepare]:
    """The backbone runs once; epochs touch only the cached features (penultimate by default).
    Pretrained features share the recommender's cache entry ("center"): one pass serves both."""
    t0 = time.perf_counter()
    view = "center" if cfg.pretrained else f"center|random-seed{cfg.seed}"
    feats = features.extract(spec, dataset, block=cfg.probe_block, model=base, device=dev, view=view,
                             mixed=cfg.mixed_precision).to(dev)  # a float32 trial reads float32 features
    timings.features_s = time.perf_counter() - t0
    mean, std = _train_moments(feats, dataset.train_idx.to(dev))
    standard = (feats - mean) / std
    head = _StandardisedHead(nn.Linear(feats.shape[1], len(dataset.classes)).to(dev), mean, std)
    return head, lambda idx, train: standard[idx]


def _train_moments(feats: torch.Tensor, train_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over the training images (never the validation ones).
    A feature constant there (a ReLU dead on every training image) keeps its scale, as scikit-learn's
    StandardScaler does: dividing by ~0 would blow up the validation images where it is alive."""
    rows = feats[train_idx].float()
    std = rows.std(0, correction=0)
    return rows.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std))


class _StandardisedHead(nn.Module):
    """The probe's classifier, trained on standardised features (the loop feeds them already
    standardised: they are computed once). Pooled activations of earlier blocks sit far from zero
    with scales that differ per block (mean |x| ≈ 4–6 against a spread of 1–3 on Lite0), which left a
    few SGD steps at 40–60 % where a converged logistic regression reaches 85–97 % (digits, 20 per
    class); standardised, the same steps reach within a few points of it on every block.
    ``folded()`` is the plain Linear on raw pooled features that the run keeps."""

    def __init__(self, linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.linear, self.mean, self.std = linear, mean, std  # plain tensors: not trained, not saved

    def forward(self, standard: torch.Tensor) -> torch.Tensor:
        return self.linear(standard)

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """W·(x − μ)/σ + b  =  (W/σ)·x + (b − (W/σ)·μ)."""
        # Allocated, not initialised: a random init here would be overwritten, and draw numbers.
        out = nn.Linear(self.linear.in_features, self.linear.out_features, device="meta").to_empty(
            device=self.mean.device)
        out.weight.copy_(self.linear.weight / self.std)
        out.bias.copy_(self.linear.bias - out.weight @ self.mean)
        return out


def _prefix_once_or_live(cfg, spec, dataset, base, dev, gen, size, timings: Timings) -> tuple[nn.Module, Prepare]:
    """(module to train, prepare): the frozen prefix runs once per view when it can be cut off
    and its activations fit; otherwise the whole model runs every epoch."""
    images = dataset.images.to(dev)  # uint8 on the device: a quarter of float32's memory
    parts = None
    if cfg.freeze and cfg.bn_mode == "frozen":  # BN statistics that train need the prefix live
        parts = split_model(base, zoo.blocks_of(spec), cfg.freeze, architecture=spec.architecture)
    if parts is not None:
        prefix, tail = parts
        key = prefix_cache.key(cfg, spec, dataset, size, dev)
        store = prefix_cache.RECENT.get(key) or prefix_cache.PrefixStore.create(prefix, images, cfg, spec, size, dev)
        if store is not None:
            if store.ready < len(store.acts):  # views left to compute: in float32, BatchNorms folded
                prefix = folded(prefix, dtype=prefix_cache.frozen_autocast(cfg, dev))
            prefix_cache.RECENT.put(key, store)
            timings.prefix_cached, timings.prefix_views, timings.prefix_views_reused = True, len(store.acts), store.ready
            return tail, prefix_cache.ViewSampler(store, prefix, images, dataset, cfg, spec, size, dev, gen)

    timings.precision = timings.trained_in  # the frozen part runs in the training pass, in its precision

    def prepare(idx: torch.Tensor, train: bool) -> torch.Tensor:
        x = images[idx]
        if train and cfg.augment:
            x = augment(x.float(), cfg.augment, device_generator(dev, gen))
        return features.normalise(x, spec, size)

    return base, prepare
