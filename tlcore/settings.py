"""Deployment settings read from the environment, in one place.

``TLCORE_DEMO=1`` turns on demo mode for a shared hosted instance: smaller caps and no access to
the server's local folders.
"""

from __future__ import annotations

import os
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


DEMO_LIMITS = Limits(max_members=5_000, max_member_bytes=10 * 2**20, max_total_bytes=200 * 2**20,
                     max_pixels=25_000_000, max_images=5_000, max_epochs=20, max_waiting_jobs=12)


def limits() -> Limits:
    return DEMO_LIMITS if demo_mode() else Limits()
