"""What an architecture's code says about it (depth, blocks, layers, smallest input), worked out once.

Each fact comes from meta-device builds and passes: the whole zoo's take ~5 minutes of a 2-core CPU
(the smallest input's bisection most of it), and its depths and blocks alone ~17 s on the first
zoo page of a fresh install. So the facts are kept in the data directory per torchvision version,
and the package ships them for the torchvision release it is tested with
(``scripts/known_architectures.py`` writes them with this code). A shipped file is read only while
the code that worked it out is unchanged (``fingerprint``); tests/zoo/test_facts.py fails until it
is written again, and recomputes a sample to check it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torchvision

from tlcore import paths
from tlcore.choices import RESOLUTION_PX

HERE = Path(__file__).parent
SHIPPED = HERE / "known"
# The code the facts come from: builds, the block and layer rules, the families they follow.
SOURCES = ("blocks.py", "families.py", "layers.py", "lite.py", "loading.py", "spec.py")


def release() -> str:
    """torchvision's release without the build's local tag (0.29.1+cu130 → 0.29.1): the same
    model code, whichever wheel installed it."""
    return torchvision.__version__.split("+")[0]


def shipped_file(kind: str) -> Path:
    return SHIPPED / f"{kind}-tv{release()}.json"


@functools.cache
def fingerprint() -> str:
    """A hash of what works the facts out: our sources, the sizes searched, the Lite package."""
    digest = hashlib.sha256(repr(RESOLUTION_PX).encode())
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    try:
        digest.update(metadata.version("efficientnet-lite-pytorch").encode())
    except metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:16]


def read_shipped(kind: str) -> tuple[str | None, dict[str, Any]]:
    """(the fingerprint it was written with, its facts) — (None, {}) when there is no such file."""
    try:
        data = json.loads(shipped_file(kind).read_text())
        return data["fingerprint"], dict(data["facts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}


@functools.cache
def shipped(kind: str) -> dict[str, Any]:
    """The facts of ``kind`` shipped for this torchvision release, if the code is still the code
    that worked them out ({} otherwise)."""
    written_with, known = read_shipped(kind)
    return known if written_with == fingerprint() else {}


def fact(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` for ``key`` unless the package ships it or the data directory has it."""
    known = shipped(kind)
    if key in known:
        return known[key]
    return paths.cached_json(f"{kind}-tv{torchvision.__version__}.json", key, compute)
