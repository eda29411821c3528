"""``train_one_epoch`` and ``evaluate`` (the split of torchvision's classification references)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tlcore.device import halved, mixed_dtype, training_autocast, unless_out_of_memory
from tlcore.finetune.config import TrialCancelled, TrialConfig
from tlcore.finetune.optim import Schedule
from tlcore.finetune.surgery import prepare_batchnorms_for_training

# (indices, training?) → the model's input for those images, already on the device.
Prepare = Callable[[torch.Tensor, bool], torch.Tensor]
# (images, training?) after a batch went through (a cached prefix counts what it has computed).
Served = Callable[[int, bool], None]


@dataclass
class Loop:
    """What both passes share: the module that runs, labels on the device, how a batch is made."""

    model: nn.Module
    labels: torch.Tensor
    prepare: Prepare
    cfg: TrialConfig
    device: torch.device
    should_stop: Callable[[], bool] | None = None
    batch_size: int = 0  # 0: the config's; halved for the rest of the trial when a batch runs out of memory
    scaler: torch.amp.GradScaler | None = None  # loss scaling for fp16 (its scale carries over epochs)
    served: Served | None = None  # told of each batch that went through, once (not of one retried)
    rates_follow_batch: Schedule | None = None  # an automatic batch's rates: halved with the batch
    dtype: torch.dtype | None = None  # what the trainable part trains in (training_dtype); None: float32

    def __post_init__(self) -> None:
        self.batch_size = self.batch_size or self.cfg.batch_size
        # float16 autocast (GPUs without bfloat16) underflows small gradients without loss scaling.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def mixed_precision(loop: Loop):
    return training_autocast(loop.device, loop.dtype)


# Below this input size a CPU trains in float32: there bf16 training cost more than it saved (the
# 2-core AMX VM, bench/cpu_precision.py, EfficientNet-Lite0 trials against float32's time: at 32 px
# whole-model and half-frozen ones 0.89-0.96x, the last two blocks 0.90-0.97x, at 48 px 0.97-1.07x;
# at 64 px the last two blocks 1.13-1.16x, half and whole-model ones 1.00-1.02x; at 128 px 1.15-1.55x).
CPU_MIXED_TRAINING_MIN_PX = 64


def training_dtype(cfg: TrialConfig, device: torch.device, size: int) -> torch.dtype | None:
    """The autocast dtype the trainable part trains in on ``size``-px inputs (None: float32): the
    device's mixed precision (``device.training_autocast``), on a CPU from CPU_MIXED_TRAINING_MIN_PX
    up. A linear probe's head trains in float32 everywhere: its features were computed once, in the
    trial's precision, and a 1,280×C product gains nothing from bf16 but rounding (the 2-core VM: 3 ms
    an epoch in float32, 5–10 ms in bf16)."""
    if not cfg.mixed_precision or cfg.freeze == "all":
        return None
    if device.type == "cpu" and size < CPU_MIXED_TRAINING_MIN_PX:
        return None
    return mixed_dtype(device)


def train_one_epoch(loop: Loop, idx: torch.Tensor, *, opt: torch.optim.Optimizer,
                    sched: Schedule, frozen: list[nn.Module],
                    gen: torch.Generator) -> tuple[float, float]:
    """One shuffled pass over ``idx`` with an optimizer and scheduler step per batch; (loss, accuracy)."""
    loop.model.train()
    prepare_batchnorms_for_training(loop.model, frozen, loop.cfg)
    order = idx[torch.randperm(len(idx), generator=gen, device="cpu")]
    loss, acc, _ = _pass(loop, order, train=True, step=lambda loss, n: _step(opt, sched, loop.scaler, loss, n))
    return loss, acc


def confusion(truth: torch.Tensor, said: torch.Tensor, n_classes: int) -> torch.Tensor:
    """n×n counts, rows: true class, columns: what was said (a trial's stored matrix, and the lab's)."""
    counts = torch.zeros(n_classes, n_classes, dtype=torch.long)
    counts.index_put_((truth.cpu().long(), said.cpu().long()), torch.ones(len(truth), dtype=torch.long),
                      accumulate=True)
    return counts


@torch.no_grad()
def evaluate(loop: Loop, idx: torch.Tensor) -> tuple[float, float, torch.Tensor | None]:
    """(loss, accuracy, predictions) over ``idx``."""
    loop.model.eval()
    return _pass(loop, idx, train=False, step=None)


def _step(opt: torch.optim.Optimizer, sched: Schedule, scaler: torch.amp.GradScaler, loss: torch.Tensor,
          images: int) -> None:
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    try:
        scaler.step(opt)
    except RuntimeError:  # out of memory: the batch is retried smaller
        _forget_the_step(opt, scaler)
        raise
    scaler.update()
    sched.advance(images)


def _forget_the_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Undo what a GradScaler step that ran out of memory left half done (fp16 only). It marks the
    optimizer unscaled, so the retried batch's fresh gradients would be applied still scaled, and it
    hands a fused optimizer the scale as attributes it removes only after a step that returns, so
    the retry would divide by the scale squared (an update 65,536 times too small)."""
    opt.__dict__.pop("grad_scale", None)
    opt.__dict__.pop("found_inf", None)
    if scaler.is_enabled():  # a disabled scaler (bf16, fp32) keeps no state at all
        # GradScaler has no public reset between update() calls; its states are a defaultdict: fresh again.
        scaler._per_optimizer_states.pop(id(opt), None)


def _pass(loop: Loop, order: torch.Tensor, *, train: bool, step) -> tuple[float, float, torch.Tensor | None]:
    total_loss = torch.zeros((), device=loop.device)
    correct = torch.zeros((), device=loop.device, dtype=torch.long)
    preds = []
    # On the device once per pass: a copy from pageable memory per batch waits for the GPU to
    # finish everything queued, so the CPU could never queue the next step while one runs.
    order = order.to(loop.device)
    start = 0
    while start < len(order):
        if loop.should_stop is not None and loop.should_stop():
            raise TrialCancelled()
        batch = order[start:start + loop.batch_size]
        done = unless_out_of_memory(_batch, loop, batch, train, step)
        if done is None:
            _halve_batch(loop)
            continue  # the same images again, in a smaller batch
        loss, pred = done
        if loop.served is not None:
            loop.served(len(batch), train)
        # Sums stay on the device: no host synchronisation per batch.
        total_loss += loss.detach() * len(batch)
        correct += (pred == loop.labels[batch]).sum()
        if not train:  # evaluate returns the predictions; training has no use for them
            preds.append(pred)
        start += len(batch)
    n = max(1, len(order))
    return (total_loss / n).item(), (correct.float() / n).item(), torch.cat(preds) if preds else None


def _batch(loop: Loop, batch: torch.Tensor, train: bool, step) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = loop.prepare(batch, train), loop.labels[batch]
    with torch.set_grad_enabled(train), mixed_precision(loop):
        out = loop.model(x)
        logits = getattr(out, "logits", out)  # Inception returns (logits, aux) in training
        loss = nn.functional.cross_entropy(logits.float(), y)
    if step is not None:
        step(loss, len(batch))
    return loss, logits.detach().argmax(1)


def _halve_batch(loop: Loop) -> None:
    """Out of device memory: go on at half the batch (an optimizer step then sees fewer images),
    or stop with a message when a single image does not fit."""
    loop.batch_size = halved(loop.batch_size, "image: load the dataset at a smaller resolution, freeze more "
                                              "blocks or choose a smaller model")
    if loop.rates_follow_batch is not None:  # linear scaling, as TrialConfig.for_run set them
        loop.rates_follow_batch.scale_peaks(0.5)
