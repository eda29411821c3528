"""Deployment settings read from the environment, in one place.

``TLCORE_DEMO=1`` turns on demo mode for a shared hosted instance: smaller caps and no access to
the server's local folders. (The app also accepts ``TLCORE_DEMO`` from Streamlit secrets; it copies
it into the environment at start, so the engine reads one place.)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass


def demo_mode() -> bool:
    return os.environ.get("TLCORE_DEMO", "").lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Limits:
    """Caps on untrusted input (DESIGN §8). Sizes in bytes, pixels per image."""

    max_members: int = 50_000  # files in one archive / upload / folder
    max_member_bytes: int = 50 * 2**20
    max_total_bytes: int = 4 * 2**30  # uncompressed, whole archive
    max_ratio: float = 200.0  # uncompressed / compressed, per member (zip bombs)
    max_pixels: int = 40_000_000  # per image; a larger header is a decompression bomb
    max_aspect: float = 50.0  # longer side / shorter side
    max_images: int = 100_000  # per dataset after the per-class cap
    max_epochs: int = 500  # per trial
    max_waiting_jobs: int = 100  # trials queued behind the running one, all sessions together
    max_waiting_per_session: int = 100  # of those, from one session (demo: one user cannot fill it;
    # 6 keeps a Strategy validation possible: 4 strategies, the advice, LogME's block)
    max_vis_steps: int = 4096  # optimisation steps per feature-visualisation render
    max_vis_size: int = 1024  # px, the side of a rendered image
    max_vis_channels: int = 256  # images in one render call (a gallery)
    max_dream_side: int = 2048  # px, the longer side of a DeepDream photo
    max_dream_steps: int = 500  # per octave
    max_trial_seconds: float | None = None  # a trial stops after this long (demo: one visitor's scratch
    # ResNet-152 on 5,000 images at 224 px would hold the one queue for hours)


DEMO_LIMITS = Limits(max_members=5_000, max_member_bytes=10 * 2**20, max_total_bytes=200 * 2**20,
                     max_pixels=25_000_000, max_images=5_000, max_epochs=20, max_waiting_jobs=12,
                     max_waiting_per_session=6, max_vis_steps=256, max_vis_size=160, max_vis_channels=16,
                     max_dream_side=512, max_dream_steps=20, max_trial_seconds=600)


def limits() -> Limits:
    return DEMO_LIMITS if demo_mode() else Limits()


def cache_budget() -> int:
    """Bytes the rebuildable caches (decoded datasets, activations, renders) may take on disk before
    the least recently used go: ``TLCORE_CACHE_GB``, else 10 GiB (2 GiB in demo mode, where any
    visitor can make new entries — a resolution, a cap, a seed — on a small shared disk)."""
    default = 2.0 if demo_mode() else 10.0
    raw = os.environ.get("TLCORE_CACHE_GB", "").strip()
    try:
        gigabytes = float(raw) if raw else default
    except ValueError:
        gigabytes = float("nan")
    if not 0 <= gigabytes < 2**20:  # a deployment typo must not stop every write: say so, keep the default
        warnings.warn(f"TLCORE_CACHE_GB must be a number of GiB, got {raw!r}: using {default:g}", stacklevel=2)
        gigabytes = default
    return int(gigabytes * 2**30)


def decode_threads() -> int:
    """Threads that decode images with Pillow: ``TLCORE_DECODE_THREADS``, else one per core."""
    default = os.cpu_count() or 2
    raw = os.environ.get("TLCORE_DECODE_THREADS", "").strip()
    if not raw:
        return default
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1024:  # isdigit() alone accepts "²"
        return int(raw)
    warnings.warn(f"TLCORE_DECODE_THREADS must be a whole number from 1 to 1024, got {raw!r}: using {default}",
                  stacklevel=2)
    return default


def cpu_bf16() -> bool | None:
    """``TLCORE_CPU_BF16``: 1 or 0 turns the CPU's bf16 mixed precision on or off (0: exact
    float32; either: a policy tested on any CPU); unset, tlcore.device.cpu_has_fast_bf16 decides."""
    raw = os.environ.get("TLCORE_CPU_BF16", "").strip()
    if raw in ("0", "1"):
        return raw == "1"
    if raw:
        warnings.warn(f"TLCORE_CPU_BF16 must be 0 or 1, got {raw!r}: deciding from the CPU", stacklevel=2)
    return None


def demo_caps() -> list[str]:
    """The demo's caps as a user reads them (the banner, the README)."""
    cap = DEMO_LIMITS
    return [f"uploads up to {cap.max_total_bytes // 2**20} MB and {cap.max_images:,} images",
            f"{cap.max_epochs} epochs and {cap.max_trial_seconds / 60:.0f} minutes per trial, "
            f"{cap.max_waiting_per_session} trials queued per visitor",
            f"feature visualisation up to {cap.max_vis_steps} steps at {cap.max_vis_size} px, "
            f"{cap.max_vis_channels} channels at once",
            f"DeepDream on photos up to {cap.max_dream_side} px, {cap.max_dream_steps} steps per octave",
            "no folders on the server"]
