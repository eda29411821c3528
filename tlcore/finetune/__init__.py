"""Fine-tuning trials, split the way torchvision's classification references are:

- ``config``: TrialConfig and the choices it offers, EpochStats, Timings, TrialResult;
- ``surgery``: a new head, frozen blocks, which BatchNorm statistics learn;
- ``optim``: parameter groups (no decay on norms and biases) and the learning-rate schedule;
- ``augment``: flips and crops on the device;
- ``engine``: ``train_one_epoch`` and ``evaluate``;
- ``prefix_cache``: the frozen prefix run once per view, kept for the next trial;
- ``trial``: ``run_trial``, which puts them together.

Speed design (DESIGN §6): the dataset moves to the device once as uint8 and is augmented there;
frozen blocks run without autograd; a linear probe (``freeze="all"``) runs the backbone once
over the data, caches the features, then trains only the new head on them.
"""

from tlcore.finetune.augment import augment
from tlcore.finetune.config import (
    AUGMENTATIONS,
    AUTO_MAX_BATCH,
    AUTO_MIN_STEPS,
    BN_MODES,
    DEFAULT_BATCH,
    DEFAULT_LR,
    OPTIMIZERS,
    PRECISIONS,
    PROBE_LR,
    SCHEDULES,
    EpochStats,
    Freeze,
    Timings,
    TrialCancelled,
    TrialConfig,
    TrialDiverged,
    TrialResult,
    auto_batch,
    default_lr,
    freeze_label,
    sweep_depths,
)
from tlcore.finetune.surgery import replace_head
from tlcore.finetune.trial import run_trial

__all__ = ["DEFAULT_LR", "PROBE_LR", "default_lr", "AUGMENTATIONS", "BN_MODES", "DEFAULT_BATCH", "OPTIMIZERS", "PRECISIONS", "SCHEDULES", "EpochStats",
           "AUTO_MAX_BATCH", "AUTO_MIN_STEPS", "auto_batch", "freeze_label", "sweep_depths", "Freeze", "Timings", "TrialCancelled", "TrialConfig", "TrialDiverged", "TrialResult", "augment", "replace_head", "run_trial"]
