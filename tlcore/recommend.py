"""The seeds' dataset-size × similarity matrix, with both axes measured on the user's data.

Size: training images per class. Similarity: how much of the labels' uncertainty ImageNet's own
classes remove — LEEP's gain over an uninformative source, (LEEP − log-prior) / −log-prior,
which is 0 when the pretrained head's predictions say nothing about the labels and 1 when they
determine them. Beside it, as evidence: NCE, the ImageNet head's confidence, how far each
BatchNorm layer's input statistics are from ImageNet's, and LogME of the features at every
block (which depth's features fit the labels best).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from tlcore import features, transferability, zoo
from tlcore.data import Dataset, DatasetError
from tlcore.finetune import TrialConfig

# Rules of thumb, not laws: the validation run on the Strategy page checks them on your data.
MIN_PER_CLASS = 2  # training images per class below which no score means anything
# …and below which the similarity is high and unsteady: LEEP counts its ImageNet-class frequencies on
# the same few images it scores. Digits at 32 px, Lite0 (`tlcore recommend --max-per-class N --seed S`):
# 0.59 and 0.48 (two splits) with 2 training images a class, 0.40 with 8, 0.36 with 32, 0.33 with 80.
STEADY_PER_CLASS = 10
# The course's sizes (seed 004, Thome): "small" datasets hold 10^3–10^4 examples, e.g. VOC'07 (20
# classes, 5,000 examples); "medium" ones 10^5, e.g. Food-101 (101 classes). Per class:
REFERENCE_DATASETS = {"VOC'07": (5_000 / 20, "small"), "Food-101": (100_000 / 101, "medium")}
# Training images per class below which fine-tuning many weights overfits: between the two, at
# their geometric mean, so each lands where the course puts it (a line at 100 put VOC'07 in "large").
SMALL_PER_CLASS = 500
SIMILAR_AT = 0.5  # similarity (LEEP gain) from which ImageNet's classes describe your labels well
LOW_RESOLUTION = 96  # px: below it the similarity is mostly a statement about the resolution
FEW_CLASSES = 3  # classes up to which a high similarity is mostly how easy the labels are to tell apart


@dataclass(frozen=True)
class Measurement:
    model: str
    n_images: int
    n_classes: int
    per_class: float  # median training images per class
    resolution: int  # px of the dataset as measured
    similarity: float  # LEEP gain, 0 … 1
    leep: float
    leep_floor: float  # LEEP of an uninformative source: the mean log prior of the labels
    nce: float
    imagenet_confidence: float  # mean top softmax probability of the ImageNet head
    h_score: float  # the shrinkage H-score (Ibrahim et al.) of the penultimate features
    batchnorm_gap: list[tuple[str, float]]  # (BatchNorm layer, gap 0 … 1), forward order
    # (block, LogME of its pooled output); penultimate last. The full model's evidence (``full_rank``):
    # blocks differ in width, and with fewer training images than channels the published formula
    # rises with the width even on noise, so it would always point at the widest block.
    logme_by_block: list[tuple[str, float]]
    smallest_class: int | None = None  # training images of the smallest class
    dataset_resolution: int | None = None  # px of the dataset itself (``resolution`` is what the model read)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    size: str  # "small" | "large"
    similar: bool
    strategy: str
    freeze: int | str  # the Fine-tune lab's setting for it ("all" = linear probe)
    probe_block: str  # the block whose features to try a classifier on
    reasons: list[str]
    measurement: Measurement

    @property
    def quadrant(self) -> str:
        """The matrix cell, e.g. ``small-similar``."""
        return f"{self.size}-{'similar' if self.similar else 'different'}"

    def to_json(self) -> dict:
        """For scripts: ``similarity`` (the number) and ``quadrant`` sit at the top level beside
        ``size``, ``similar`` and ``strategy``; the full measurement is nested."""
        return {"size": self.size, "similar": self.similar, "similarity": self.measurement.similarity,
                "quadrant": self.quadrant, **asdict(self)}


STRATEGIES = {  # (size, similar) → what the seeds advise
    ("small", True): "Train only a new classifier on the frozen pretrained features",
    ("large", True): "Fine-tune the last (deepest) blocks and a new classifier",
    ("small", False): "Train a classifier on features from an earlier block",
    ("large", False): "Fine-tune most or all of the network, starting from the pretrained weights",
}


def measure(spec: zoo.ModelSpec, dataset: Dataset, *, model: nn.Module | None = None,
            device: torch.device | str | None = None, batchnorm: bool = True,
            on_step: features.OnStep | None = None) -> Measurement:
    """Every label-using score on the training split only (validation labels stay unseen). The
    features come from one pass over the training images and are cached, so the Fine-tune lab's
    linear probe reuses them and runs the model on the validation images only. ``batchnorm``:
    also the BatchNorm gaps (``batchnorm_gaps``: a second pass, the longer one on a CPU); without
    them ``batchnorm_gap`` is empty, for a caller that shows the rest first. ``on_step``: the
    passes' progress in images (``features.OnStep``)."""
    rows, y = _scored_split(dataset)
    blocks = [b.name for b in zoo.blocks_of(spec) if b.name != "head"]
    wanted = [*blocks, features.PENULTIMATE, features.LOGITS]
    total = len(rows) + (features.batchnorm_images(dataset) if batchnorm else 0)
    feats = {k: v.numpy() for k, v in
             features.extract_many(spec, dataset, wanted, model=model, device=device, rows=rows,
                                   on_step=features.shifted(on_step, 0, total)).items()}
    probs = _softmax(feats[features.LOGITS])
    counts = np.bincount(y)  # training images per class
    prior = counts / len(y)
    floor = float(np.mean(np.log(prior[y])))
    scores = _head_scores(feats[features.PENULTIMATE], probs, y)
    return Measurement(
        model=spec.key, n_images=len(dataset), n_classes=len(dataset.classes),
        per_class=float(np.median(counts)), smallest_class=int(counts.min()),
        resolution=features.input_size(spec, dataset), dataset_resolution=dataset.size,
        similarity=float(np.clip((scores["leep"] - floor) / -floor, 0.0, 1.0)) if floor < 0 else 0.0,
        leep_floor=floor, imagenet_confidence=float(probs.max(1).mean()), **scores,
        batchnorm_gap=batchnorm_gaps(spec, dataset, model=model, device=device,
                                     on_step=features.shifted(on_step, len(rows), total)) if batchnorm else [],
        logme_by_block=[(b, transferability.logme(feats[b], y, full_rank=True))
                        for b in [*blocks, features.PENULTIMATE]],
    )


def batchnorm_gaps(spec: zoo.ModelSpec, dataset: Dataset, *, model: nn.Module | None = None,
                   device: torch.device | str | None = None,
                   on_step: features.OnStep | None = None) -> list[tuple[str, float]]:
    """(BatchNorm layer, gap 0 … 1) in forward order: how far each layer's input statistics on the
    data (up to 512 images, float32, no labels) are from those it stored on ImageNet. On the 2-core
    VM this pass took 4.1 s for 512 images at 128 px against 1.7 s for the scores' feature pass."""
    stats = features.batchnorm_statistics(spec, dataset, model=model, device=device, on_step=on_step)
    return [(s["name"], transferability.batchnorm_gap(s["mean"], s["var"], s["stored_mean"], s["stored_var"]))
            for s in stats]


def _references() -> str:
    """"VOC'07 has 250 per class, 'small' in the course; Food-101 990, 'medium'"."""
    return "; ".join(f"{name} has {per_class:,.0f} per class, '{size}' in the course"
                     for name, (per_class, size) in REFERENCE_DATASETS.items())


def batchnorm_reason(gaps: list[tuple[str, float]]) -> str | None:
    """What the gaps say, first third of the network against the last (None without gaps)."""
    if not gaps:
        return None
    values = [g for _, g in gaps]
    third = max(1, len(values) // 3)
    return (f"BatchNorm input statistics differ from ImageNet's by {np.mean(values[:third]):.2f} in the "
            f"first third of the network and {np.mean(values[-third:]):.2f} in the last (0 = same, "
            "1 = disjoint).")


def recommend(m: Measurement, spec: zoo.ModelSpec) -> Recommendation:
    """Place the measurement on the matrix and say why, in numbers."""
    size = "small" if m.per_class < SMALL_PER_CLASS else "large"
    similar = m.similarity >= SIMILAR_AT
    best_block = best_logme_block(m)
    best_logme = dict(m.logme_by_block)[best_block]
    n = len(zoo.blocks_of(spec))
    if similar and size == "small":
        freeze, probe = "all", features.PENULTIMATE
    elif similar:
        freeze, probe = max(1, round(n * 2 / 3)), features.PENULTIMATE
    elif size == "small":
        freeze, probe = "all", best_block  # a new classifier on the block whose features fit best
    else:
        freeze, probe = 1, best_block  # keep only the stem's generic filters fixed
    reasons = [
        f"{m.per_class:g} training images per class (median"
        + (f"; the smallest class has {m.smallest_class:,}" if m.smallest_class is not None
           and m.smallest_class < 0.8 * m.per_class else "")
        + f") — {size}: the line is {SMALL_PER_CLASS} ({_references()}).",
        f"Similarity {m.similarity:.2f}: ImageNet's own classes remove {100 * m.similarity:.0f}\u00a0% of the "
        f"uncertainty of your labels (LEEP {m.leep:.3f} against {m.leep_floor:.3f} for a source that "
        f"knows nothing) — {'similar' if similar else 'different'}: the line is {SIMILAR_AT}.",
        f"LogME is highest at {best_block} ({best_logme:.3f}): the features that fit your labels best "
        "with a linear model" + (
            "." if (freeze == "all" and probe == best_block) or best_block == features.PENULTIMATE else
            f". The matrix's advice for this cell "
            f"{'reads the penultimate features' if freeze == 'all' else 'fine-tunes blocks instead'}; the validation "
            f"also tries a classifier on {best_block}."),
    ]
    if m.per_class < STEADY_PER_CLASS:
        reasons.append(f"Only {m.per_class:g} training images per class: the similarity is counted and scored on "
                       "the same few images, which raises it and makes it unsteady (digits at 32 px: 0.59 with 2 a "
                       "class, 0.48 with another split of them; 0.40 with 8; 0.33 with 80). Below about "
                       f"{STEADY_PER_CLASS} a class, read its side of the line as a guess and let the validation decide.")
    if size == "small" and not similar:
        reasons.append("This is the matrix's hardest cell: few images and features made for other images. Expect "
                       "a lower accuracy than in the other cells; the validation shows how low.")
    if similar and m.n_classes <= FEW_CLASSES:
        # LFW's grey 25×25 faces against non-faces scored 0.88 at 64 px: the axis measures how well
        # ImageNet's classes tell the labels apart, which few labels make easy.
        reasons.append(f"With {m.n_classes} classes, 'similar' means ImageNet's classes tell them apart, which few "
                       "classes make easy; it does not say the images look like ImageNet's. The BatchNorm gap "
                       "measures that: how far the images' statistics are from those ImageNet left in the network.")
    if m.batchnorm_gap:
        reasons.append(batchnorm_reason(m.batchnorm_gap))
    if m.dataset_resolution is not None and (note := features.enlargement_note(spec, m.dataset_resolution,
                                                                             m.resolution)):
        reasons.append(note)
    if m.resolution < LOW_RESOLUTION and not similar:
        reasons.append(f"The images were read at {m.resolution} px; ImageNet models were trained at about 224, so "
                       "objects look smaller than they ever did, which can lower the similarity — load the "
                       "dataset at a higher resolution to check.")
    elif m.resolution < spec.crop_size:
        # The head's answers change with the scale of the objects: a practitioner's 195 photos measured
        # 0.07 at 32 px, 0.87 at 64 and 128, 0.58 at 224.
        reasons.append(f"Measured at {m.resolution} px, the resolution your trials use; {spec.model} was trained "
                       f"at {spec.crop_size}. The similarity holds for images this size and can differ at another: "
                       "load the dataset at another resolution to see how much.")
    if freeze != "all" and freeze >= n:
        freeze = n - 1
    strategy = STRATEGIES[(size, similar)]
    if (size, similar) == ("small", False) and probe == features.PENULTIMATE:
        # The cell advises an earlier block, yet none fits better than the last: the headline must not
        # say "an earlier block" above a setting that reads the penultimate features.
        strategy = ("Train a classifier on the frozen features: the course advises an earlier block's here, but "
                    "the penultimate features fit your labels best")
    return Recommendation(size=size, similar=similar, strategy=strategy, freeze=freeze,
                          probe_block=probe, reasons=reasons, measurement=m)


# Thome's table (seed 004): the strategies that compete with the advice, as Fine-tune lab settings
# (a negative freeze counts from the end: -2 leaves the last block and the head to train).
STRATEGY_TRIALS = {
    "linear probe (frozen features)": {"freeze": "all", "pretrained": True, "probe_block": features.PENULTIMATE},
    "fine-tune the last block": {"freeze": -2, "pretrained": True, "probe_block": features.PENULTIMATE},
    "fine-tune everything": {"freeze": 0, "pretrained": True, "probe_block": features.PENULTIMATE},
    # Random weights have nothing to keep: every layer learns at the head's rate.
    "from scratch": {"freeze": 0, "pretrained": False, "probe_block": features.PENULTIMATE, "backbone_lr_mult": 1.0},
}


def advised_setting(rec: Recommendation) -> dict:
    """The recommendation as Fine-tune lab settings."""
    probe = rec.probe_block if rec.freeze == "all" else features.PENULTIMATE
    return {"freeze": rec.freeze, "pretrained": True, "probe_block": probe}


def validation_trials(rec: Recommendation, *, epochs: int = 5) -> dict[str, TrialConfig]:
    """The trials that check a recommendation on the data: the competing strategies and the
    advised setting (when it is not one of them), by name, at the default peak rates
    (``finetune.default_lr``, which TrialConfig applies)."""
    spec = zoo.get_spec(rec.measurement.model)
    n = len(zoo.blocks_of(spec))
    trials = {name: dict(t, freeze=n + t["freeze"] if isinstance(t["freeze"], int) and t["freeze"] < 0
                         else t["freeze"]) for name, t in STRATEGY_TRIALS.items()}
    advised = advised_setting(rec)
    if advised not in trials.values():
        name = ("advised setting" if advised["probe_block"] == features.PENULTIMATE
                else f"classifier on {advised['probe_block']} features (advised)")
        trials[name] = advised
    # Where LogME points elsewhere than the advice, its block is checked too: a probe costs little.
    best = best_logme_block(rec.measurement)
    fitted = {"freeze": "all", "pretrained": True, "probe_block": best}
    if best != features.PENULTIMATE and fitted not in trials.values():
        trials[f"classifier on {best} features (highest LogME)"] = fitted
    return {name: TrialConfig(model=spec.key, epochs=epochs, **t) for name, t in trials.items()}


def advised_strategy(rec: Recommendation) -> str:
    """The name, among ``validation_trials``', of the trial that runs the advice."""
    advised = advised_setting(rec)
    return next(name for name, cfg in validation_trials(rec, epochs=1).items()
                if {k: getattr(cfg, k) for k in advised} == advised)


def best_logme_block(m: Measurement) -> str:
    """The block whose pooled features a linear model fits best (LogME's evidence)."""
    return max(m.logme_by_block, key=lambda kv: kv[1])[0]


def score_model(spec: zoo.ModelSpec, dataset: Dataset, *, block: str = features.PENULTIMATE,
                model: nn.Module | None = None, device: torch.device | str | None = None,
                on_step: features.OnStep | None = None) -> dict:
    """Transferability scores of one pretrained model on the training split, for ranking models
    before training any: LogME and the shrinkage H-score of ``block``'s features, LEEP and NCE of
    the ImageNet head — all from one forward pass over the training images (cached). LogME is the
    full model's evidence, as in ``Measurement.logme_by_block``: models differ in width too.
    ``seconds``: what scoring took."""
    started = time.perf_counter()
    rows, y = _scored_split(dataset)
    feats = features.extract_many(spec, dataset, [block, features.LOGITS], model=model, device=device, rows=rows,
                                  on_step=on_step)
    f = feats[block].numpy()
    scores = {"model": spec.key, "block": block, "logme": transferability.logme(f, y, full_rank=True),
              **_head_scores(f, _softmax(feats[features.LOGITS].numpy()), y)}
    return {**scores, "seconds": time.perf_counter() - started}


def _scored_split(dataset: Dataset) -> tuple[torch.Tensor, np.ndarray]:
    """The training rows and their labels, or DatasetError when they are too few to score: with
    fewer than two images per class, LogME's evidence and the H-score's covariances are
    degenerate (2 images of 2 classes gave LogME −inf, and the advice as if it meant something)."""
    rows = dataset.train_idx
    y = dataset.labels[rows].numpy()
    classes = len(np.unique(y))
    if len(y) < MIN_PER_CLASS * classes:
        raise DatasetError(f"{len(y)} training images for {classes} classes are too few to measure "
                           f"transferability: at least {MIN_PER_CLASS} per class on average are needed, and "
                           f"about {STEADY_PER_CLASS} for steady scores")
    return rows, y


def what_imagenet_sees(spec: zoo.ModelSpec, dataset: Dataset, *, top: int = 3, model: nn.Module | None = None,
                       device: torch.device | str | None = None,
                       on_step: features.OnStep | None = None) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per class of the dataset, the ``top`` ImageNet classes the pretrained head gives its training
    images on average, with that mean probability: the P(z | y) that LEEP scores (Nguyen et al.
    2020), in words (the Keras recipe's "decode predictions", per class). From the measurement's
    cached pass over the training images."""
    rows, y = _scored_split(dataset)
    logits = features.extract_many(spec, dataset, [features.LOGITS], model=model, device=device, rows=rows,
                                   on_step=on_step)[features.LOGITS].numpy()
    names = zoo.imagenet_labels(spec, logits.shape[1])
    probs = _softmax(logits)
    seen = []
    for c, name in enumerate(dataset.classes):
        mean = probs[y == c].mean(0)
        seen.append((name, [(names[i], float(mean[i])) for i in np.argsort(-mean)[:top]]))
    return seen


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(logits).softmax(dim=1).numpy()


def _head_scores(penultimate: np.ndarray, probs: np.ndarray, y: np.ndarray) -> dict:
    """The scores of the pretrained head and its input features (training rows only)."""
    return {"leep": transferability.leep(probs, y), "nce": transferability.nce(probs.argmax(1), y),
            "h_score": transferability.shrinkage_h_score(penultimate, y)}  # the original saturates when D ≥ N


def near_chance(best_accuracy: float, n_classes: int, margin: float = 0.05) -> bool:
    """A trial whose best validation accuracy stayed within ``margin`` of chance: too few epochs
    (or too high a rate) to say anything about its strategy."""
    return best_accuracy < 1 / n_classes + margin


def accuracy_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on ``n`` images, √(p(1 − p)/n)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n > 0 else float("nan")


def tie_margin(best: float, n: int) -> float:
    """How far below the best accuracy on ``n`` validation images a result still ties with it: a
    standard error, or one image (at 1.000 the standard error is 0, yet one image is chance)."""
    return max(accuracy_se(best, n), 1 / n) if n > 0 else 0.0


def tied_best(accuracies: Sequence[float], n: int) -> list[int]:
    """Indices of the results within ``tie_margin`` of the best on the same ``n`` validation
    images: trials these close are not told apart."""
    best = max(accuracies)
    return [i for i, a in enumerate(accuracies) if a >= best - tie_margin(best, n) - 1e-12]


@dataclass(frozen=True)
class Verdict:
    """What a finished validation says (``validation_verdict``)."""

    best: list[str]  # the strategies tied for the best, the most accurate first
    best_acc: float
    margin: float  # how far below best_acc still ties (``tie_margin``)
    stuck: list[str]  # strategies that never got past chance: the comparison settles nothing
    advice_among_best: bool | None  # None where the advised setting was not among the trials
    advised_acc: float | None


def validation_verdict(results: Sequence[tuple[str, float, float, bool]], n_val: int, n_classes: int) -> Verdict:
    """``results``: (strategy, final validation accuracy, best accuracy over its epochs, whether it
    is the matrix's advised setting) per finished trial, all on the same ``n_val`` images."""
    accs = [r[1] for r in results]
    tied = sorted(tied_best(accs, n_val), key=lambda i: -accs[i])
    advised = [r[1] for r in results if r[3]]
    return Verdict(best=[results[i][0] for i in tied], best_acc=max(accs), margin=tie_margin(max(accs), n_val),
                   stuck=[r[0] for r in results if near_chance(r[2], n_classes)],
                   advice_among_best=any(results[i][3] for i in tied) if advised else None,
                   advised_acc=max(advised) if advised else None)


def rank_agreement(scores: list[float], accuracies: list[float]) -> dict:
    """How well a score orders models as their real fine-tuned accuracy does: Kendall's τ (the
    measure LogME's authors report) and Spearman's ρ, from scipy. NaN with fewer than 3 models."""
    from scipy.stats import kendalltau, spearmanr

    if len(scores) < 3:
        return {"kendall_tau": float("nan"), "spearman_rho": float("nan")}
    return {"kendall_tau": float(kendalltau(scores, accuracies).statistic),
            "spearman_rho": float(spearmanr(scores, accuracies).statistic)}
