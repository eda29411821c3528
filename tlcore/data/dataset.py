"""A dataset: images decoded once into one uint8 tensor, labels, a seeded stratified split,
a profile, and the files that were skipped (with reasons)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from tlcore.data.archive import Skipped, skipped_note
from tlcore.data.decode import worker_pool
from tlcore.data.errors import VALID_LAYOUT, DatasetError


@dataclass
class Profile:
    counts: dict[str, int]  # images per class (after the per-class cap)
    widths: list[int]  # original sizes, one per kept image
    heights: list[int]
    modes: dict[str, int]  # original Pillow modes ("RGB", "L", "P", "I;16", …)
    formats: dict[str, int]
    duplicate_groups: int  # groups of images identical after decoding (cheap hash)
    single_image_classes: list[str] = field(default_factory=list)  # in training only, not validated

    @property
    def min_per_class(self) -> int:
        return min(self.counts.values())


@dataclass
class Dataset:
    name: str
    images: torch.Tensor  # N×3×S×S uint8, CPU (training moves it to the device once)
    labels: torch.Tensor  # N int64
    classes: list[str]
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    profile: Profile
    skipped: list[Skipped]
    fingerprint: str  # content hash: keys every cache built on this dataset
    source: str
    private: bool = False  # a visitor's own files: caches built on it go to their private space
    # Each image's path inside its zip or folder, so results can name the user's files; [] for
    # built-in and torchvision sets, and for a cache entry written before this was kept.
    paths: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split_digest(self) -> str:
        """Names the validation split: the same images split with another seed or cap differ here,
        so a run's "validation images" are never taken from another split (its training images)."""
        return hashlib.sha256(self.val_idx.to(torch.int64).numpy().tobytes()).hexdigest()[:16]

    def image_name(self, i: int) -> str:
        """What names image ``i`` to its owner: its path in their zip or folder, else its class and index."""
        return self.paths[i] if self.paths else f"{self.classes[int(self.labels[i])]} #{i}"

    def summary(self) -> dict:
        """JSON-ready description (the CLI's output)."""
        return {
            "name": self.name, "source": self.source, "n_images": len(self), "resolution": self.size,
            "classes": self.classes, "counts": self.profile.counts,
            "n_train": int(self.train_idx.numel()), "n_val": int(self.val_idx.numel()),
            "modes": self.profile.modes, "formats": self.profile.formats,
            "duplicate_groups": self.profile.duplicate_groups,
            "single_image_classes": self.profile.single_image_classes,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "fingerprint": self.fingerprint,
        }


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: each class with ≥ 2 images gives at least one to validation;
    a class with one image stays in training (noted in the profile)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def cap_per_class(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Indices keeping at most ``cap`` images per class (seeded), in original order."""
    if cap is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:cap] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def duplicate_groups(images: torch.Tensor) -> int:
    """Groups of images that are identical at 16×16 grey (an average-hash; cheap)."""
    if len(images) == 0:
        return 0
    step = max(1, images.shape[-1] // 32)  # subsample before converting: no float copy of it all
    grey = images[..., ::step, ::step].float().mean(1, keepdim=True)
    small = torch.nn.functional.interpolate(grey, size=(16, 16), mode="area")
    bits = (small.flatten(1) > small.flatten(1).mean(1, keepdim=True)).numpy()
    keys = Counter(np.packbits(bits, axis=1).tobytes()[i * 32:(i + 1) * 32] for i in range(len(bits)))
    return sum(1 for n in keys.values() if n > 1)


def fingerprint(images: torch.Tensor, labels: torch.Tensor, classes: list[str], *,
                files: list[bytes] | None = None, recipe: str = "") -> str:
    """A content hash of the images, labels and class names.

    Decoded files (``files``: each image's file's SHA-256, in order) are named by their bytes and
    ``recipe`` (how they were decoded) with the pixels' shape: on a GPU machine which decoder takes
    a file depends on timing, and the two differ by a few grey levels, so a pixel hash would
    give the same files another fingerprint at each decode (every cache keyed by it missing, a
    run's "same images" check failing). Other images (built-in, generated) are hashed pixel by
    pixel, in fixed 8 MiB slices on the decoding threads (hashlib releases the GIL on large
    buffers; the slices, not the thread count, fix the value): 301 MB took 0.20 s in one piece,
    0.11 s on 2 cores."""
    if files is not None:
        if len(files) != len(images) or any(len(d) != hashlib.sha256().digest_size for d in files):
            raise ValueError("a SHA-256 digest per image is needed")  # else unlike datasets would collide
        h = hashlib.sha256(f"files|{recipe}|{tuple(images.shape[1:])}".encode())
        h.update(b"".join(files))
    else:
        pixels = images.contiguous().numpy().reshape(-1)  # the buffer itself: no bytes copy of the dataset
        digests = worker_pool().map(lambda start: hashlib.sha256(pixels[start:start + _SLICE]).digest(),
                                    range(0, len(pixels), _SLICE))
        h = hashlib.sha256(b"".join(digests))
    h.update(labels.contiguous().numpy())
    h.update("\x00".join(classes).encode())
    return h.hexdigest()[:20]


_SLICE = 8 * 2**20


def assemble(name: str, source: str, images: torch.Tensor, labels: np.ndarray, classes: list[str], *,
             widths: list[int], heights: list[int], modes: list[str], formats: list[str],
             skipped: list[Skipped], max_per_class: int | None, val_fraction: float, seed: int,
             val_mask: np.ndarray | None = None, files: list[bytes] | None = None, recipe: str = "",
             paths: list[str] | None = None) -> Dataset:
    """Build a Dataset from decoded N×3×S×S uint8 images, refusing what cannot be trained on.
    ``files``, ``recipe``: the images' source files' digests and how they were decoded (see ``fingerprint``);
    ``paths``: their names in the zip or folder."""
    if len(labels) == 0:
        raise DatasetError(f"no usable image found{skipped_note(skipped)}.\n{VALID_LAYOUT}")
    keep = cap_per_class(labels, max_per_class, seed)
    if len(keep) < len(labels):
        images = images[torch.from_numpy(keep)]
    labels = labels[keep]
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        only = classes[present[0]]
        raise DatasetError(f"only one class with usable images ({only!r}); at least two are needed"
                           f"{skipped_note(skipped)}.\n{VALID_LAYOUT}")
    # Re-index so classes without any usable image disappear.
    remap = {old: new for new, old in enumerate(present)}
    classes = [classes[i] for i in present]
    labels = np.array([remap[v] for v in labels.tolist()], dtype=np.int64)
    label_t = torch.from_numpy(labels)
    if val_mask is not None:  # a source with a leakage-free split of its own (textures)
        val_mask = val_mask[keep]
        train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    else:
        train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    counts = Counter(labels.tolist())
    profile = Profile(
        counts={c: counts[i] for i, c in enumerate(classes)},
        widths=[widths[i] for i in keep], heights=[heights[i] for i in keep],
        modes=dict(Counter(modes[i] for i in keep)), formats=dict(Counter(formats[i] for i in keep)),
        duplicate_groups=duplicate_groups(images),
        single_image_classes=[c for i, c in enumerate(classes) if counts[i] == 1],
    )
    return Dataset(name=name, images=images, labels=label_t, classes=classes,
                   train_idx=torch.from_numpy(train_idx), val_idx=torch.from_numpy(val_idx),
                   profile=profile, skipped=skipped, source=source, paths=[paths[i] for i in keep] if paths else [],
                   fingerprint=fingerprint(images, label_t, classes, recipe=recipe,
                                           files=None if files is None else [files[i] for i in keep]))
