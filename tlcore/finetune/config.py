"""What a trial is asked to do and what it gives back: the config, per-epoch stats, timings, result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch

from tlcore import features, zoo
from tlcore.choices import AUGMENTATIONS, BN_MODES, OPTIMIZERS, PRECISIONS, SCHEDULES  # noqa: F401 (exported)
from tlcore.settings import demo_mode, limits

Freeze = int | Literal["all"]
DEFAULT_BATCH = 32  # small datasets need steps: 5 epochs of 250 images at 64 are only 20 updates
# An automatic batch grows on a GPU only while every epoch keeps this many updates, up to the max.
# bench/batch_accuracy.py, 5 epochs, rates scaled linearly: on 480–1,438 training images 64 (where it
# leaves ≥ 20 updates) matched 32 (+0.005 on average), while 128 and 256, with fewer than 20 updates,
# lost up to 4 and 5 points; on 5,120 (shapes at 32 px, probe and last block, SGD and AdamW, 2 seeds),
# where the rule picks 256, 128 and 256 matched 32 (mean +0.001 and +0.000, worst −0.013 and −0.009).
AUTO_MIN_STEPS = 20
AUTO_MAX_BATCH = 256
MAX_LR = 10.0  # the head's peak rate; the app's slider stops far below
MAX_LR_MULT = 10.0  # backbone rate ÷ head rate
# Peak rates for the cosine default: twice the constant rates used before it (cosine's mean is half
# its peak). bench/schedule_accuracy.py measures both against the old constant ones.
DEFAULT_LR = 0.02  # a trial that fine-tunes blocks (they learn at this × backbone_lr_mult)
PROBE_LR = 0.1  # a new head alone on frozen features


def default_lr(freeze: Freeze) -> float:
    return PROBE_LR if freeze == "all" else DEFAULT_LR


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """One trial. Rates are per step; ``freeze`` counts leading blocks of the zoo's block list."""

    model: str  # registry key or model name
    pretrained: bool = True  # False: the same architecture from scratch (random weights)
    freeze: Freeze = "all"  # 0 … n_blocks-1, or "all" = only a new head (linear probe)
    lr: float | None = None  # the new head's peak learning rate; None: default_lr(freeze)
    backbone_lr_mult: float = 0.1  # unfrozen backbone blocks learn at lr × this
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["cosine", "constant"] = "cosine"
    epochs: int = 5
    batch_size: int | None = None  # None: automatic (auto_batch), the rates then scale with it
    augment: tuple[str, ...] = ("flip",)  # any of "flip", "crop"
    bn_mode: Literal["frozen", "train"] = "frozen"  # BatchNorm statistics in frozen blocks
    seed: int = 0
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # With freeze="all": the block whose pooled output the new classifier reads. An earlier block
    # is the seeds' advice for a small dataset far from ImageNet.
    probe_block: str = features.PENULTIMATE

    def __post_init__(self):
        if self.lr is None:  # the rate suits the freeze depth unless the caller chose one
            object.__setattr__(self, "lr", default_lr(self.freeze))

    @property
    def mixed_precision(self) -> bool:
        """Autocast where the device has a lower precision ("auto" and "bfloat16" both ask for it)."""
        return self.precision != "float32"

    def for_run(self, n_train: int, device: torch.device) -> TrialConfig:
        """The config as it runs on ``device``: an automatic batch chosen for the device and the
        number of training images, and then the rates scaled with it (the linear scaling rule,
        Goyal et al. 2017: the rates given are per batch of DEFAULT_BATCH)."""
        if self.batch_size is not None:
            return self
        batch = auto_batch(n_train, device)
        return replace(self, batch_size=batch, lr=self.lr * batch / DEFAULT_BATCH)

    def check(self) -> None:
        """Raise ValueError naming the valid choices (the model's blocks from the zoo; an unknown
        model is zoo.UnknownModelError)."""
        block_names = [b.name for b in zoo.blocks_of(zoo.get_spec(self.model))]
        n_blocks = len(block_names)
        if self.freeze != "all" and not (isinstance(self.freeze, int) and 0 <= self.freeze < n_blocks):
            raise ValueError(f"freeze must be 0…{n_blocks - 1} or 'all', got {self.freeze!r}")
        if self.probe_block != features.PENULTIMATE:
            if self.freeze != "all":
                raise ValueError("a classifier on an earlier block's features needs freeze='all'")
            choices = [b for b in block_names if b != "head"]
            if self.probe_block not in choices:
                raise ValueError(f"unknown block {self.probe_block!r}; choose one of: "
                                 f"{', '.join(choices)} or {features.PENULTIMATE}")
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("epochs and batch size must be at least 1")
        cap = limits().max_epochs
        if self.epochs > cap:
            raise ValueError(f"at most {cap} epochs per trial here{' (demo mode)' if demo_mode() else ''}")
        # Above MAX_LR every model here diverges at once (and a rate of 1e300 overflows bf16).
        if not 0 < self.lr <= MAX_LR:
            raise ValueError(f"the head's learning rate must be above 0 and at most {MAX_LR:g}, got {self.lr:g}")
        if not 0 <= self.backbone_lr_mult <= MAX_LR_MULT:
            raise ValueError(f"the backbone's rate multiplier must be between 0 and {MAX_LR_MULT:g}, "
                             f"got {self.backbone_lr_mult:g}")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("bn_mode", self.bn_mode, BN_MODES),
                                     ("precision", self.precision, PRECISIONS), ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        bad = set(self.augment) - set(AUGMENTATIONS)
        if bad:
            raise ValueError(f"unknown augmentation {sorted(bad)}; choose from {', '.join(AUGMENTATIONS)}")


def sweep_depths(blocks: int, room: int) -> list[int | str]:
    """The freeze depths a sweep runs: every one (0 … blocks-1, then 'all'), or, where a visitor may
    queue fewer trials (a demo), ``room`` of them spread evenly from 0 to 'all'."""
    every = [*range(blocks), "all"]
    if len(every) <= room:
        return every
    picked = sorted({round(i * (blocks - 1) / (room - 2)) for i in range(room - 1)}) if room > 2 else [0]
    return [*picked, "all"]


def freeze_label(freeze, probe_block: str | None) -> str:
    """How a run's depth reads in the history, the app's and the CLI's: 'all' for the standard linear
    probe, 'all (block)' for a classifier on an earlier block, else the number of frozen blocks."""
    if freeze == "all" and probe_block not in (None, features.PENULTIMATE):
        return f"all ({probe_block})"
    return str(freeze)


def auto_batch(n_train: int, device: torch.device) -> int:
    """The batch "auto" stands for. DEFAULT_BATCH on a CPU, where training is compute-bound and a
    larger batch is no faster (DESIGN §6); on a GPU, where small batches leave it idle, the largest
    power of two up to AUTO_MAX_BATCH that still gives every epoch AUTO_MIN_STEPS updates."""
    batch = DEFAULT_BATCH
    if device.type == "cpu":
        return batch
    while batch * 2 <= AUTO_MAX_BATCH and n_train // (batch * 2) >= AUTO_MIN_STEPS:
        batch *= 2
    return batch


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class Timings:
    """Where a trial's seconds went (``first_epoch_s``: from Run to the first point on the curve)."""

    total_s: float = 0.0
    first_epoch_s: float | None = None
    setup_s: float | None = None  # Run → the first batch: model on the device, features or prefix buffers ready
    per_epoch_s: list[float] = field(default_factory=list)
    features_s: float | None = None  # linear probe: the one backbone pass
    prefix_cached: bool = False  # frozen prefix run once per view instead of every epoch
    prefix_views: int = 0
    prefix_views_reused: int = 0  # views a recent trial had already computed
    batch_size: int | None = None  # the batch the trial ended with (smaller than asked after out of memory)
    # What the frozen layers computed in (features, the cached prefix): "bfloat16" or "float16" (the
    # device's mixed precision: a GPU, bf16 on an AMX CPU) or "float32". The config's "bfloat16" asks
    # for mixed precision; a GPU without it runs float16, a CPU without AMX float32.
    precision: str | None = None
    # What the trainable part trained in: the device's mixed precision, or float32 for a probe's head,
    # a float32 trial, and on a CPU without AMX or on images under 64 px (finetune.engine.training_dtype).
    trained_in: str | None = None
    # Other heavy work (another trial, a render, a page's feature pass) ran on the device meanwhile:
    # the seconds are pessimistic, not the depth's cost.
    under_load: bool = False


@dataclass
class TrialResult:
    config: dict
    classes: list[str]
    history: list[EpochStats]
    val_acc: float
    confusion: list[list[int]]  # rows: true class, columns: predicted
    trainable_params: int
    total_params: int
    timings: Timings = field(default_factory=Timings)
    state_dict: dict | None = field(default=None, repr=False)
    # The size the network read the images at: the dataset's, or larger where the network needs it
    # (features.input_size). None in runs kept before this was recorded.
    input_px: int | None = None
    val_split: str | None = None  # Dataset.split_digest of its validation images (None in older runs)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("state_dict")
        return out


class TrialDiverged(ValueError):
    """Training and validation losses stopped being numbers: the weights are NaN or infinite, and
    every later epoch would only repeat it (one overflowing batch under fp16 loss scaling leaves the
    validation loss finite and goes on)."""

    def __init__(self, epoch: int, lr: float):
        super().__init__(f"training diverged in epoch {epoch}: the loss is no longer a number. The learning "
                         f"rate ({lr:g}) is too high for this model and data; try a tenth of it")


class TrialCancelled(Exception):
    """The caller's ``should_stop`` said so; the history so far is in ``args[0]``."""
