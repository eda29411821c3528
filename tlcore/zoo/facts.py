"""What an architecture's code says about it (depth, blocks, layers, smallest input), worked out once.

Each fact comes from meta-device builds and passes: ~0.2 s an architecture, ~40 s for the whole zoo
on a 2-core CPU, which a fresh install would spend on its first zoo page. So the facts are kept in
the data directory per torchvision version, and the package ships them for the torchvision release
it is tested with (``scripts/known_architectures.py`` writes them from this code;
tests/zoo/test_facts.py recomputes a sample and checks they still agree). Another release computes
its own; a change of a rule changes the kind's name, so a stale file is never read.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchvision

from tlcore import paths

SHIPPED = Path(__file__).parent / "known"


def release() -> str:
    """torchvision's release without the build's local tag (0.29.1+cu130 → 0.29.1): the same
    model code, whichever wheel installed it."""
    return torchvision.__version__.split("+")[0]


def shipped_file(kind: str) -> Path:
    return SHIPPED / f"{kind}-tv{release()}.json"


@functools.cache
def shipped(kind: str) -> dict[str, Any]:
    """The facts of ``kind`` shipped for this torchvision release ({} for another release)."""
    try:
        data = json.loads(shipped_file(kind).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fact(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` for ``key`` unless the package ships it or the data directory has it."""
    known = shipped(kind)
    if key in known:
        return known[key]
    return paths.cached_json(f"{kind}-tv{torchvision.__version__}.json", key, compute)
