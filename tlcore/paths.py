"""Where tlcore keeps its own files (caches, measurements, run history)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import platformdirs


def home() -> Path:
    """The tlcore data directory: ``$TLCORE_HOME`` or the user's cache dir."""
    root = os.environ.get("TLCORE_HOME") or platformdirs.user_cache_dir("tlcore")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


PRIVATE = "private"  # home()/private/<space>/…: one folder per visitor of a shared demo
_SPACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("tlcore_private_space", default=None)
_SPACE_NAME = re.compile(r"[0-9A-Za-z_-]{1,64}")


@contextlib.contextmanager
def private_space(name: str | None) -> Iterator[None]:
    """Inside this block, files made from a visitor's own data (their uploads' decoded tensors and
    features, renders of their fine-tuned runs) go to ``home()/private/<name>``, which
    ``sweep_private`` deletes when the visitor has gone. ``None``: no private space (local use)."""
    if name is not None and not _SPACE_NAME.fullmatch(name):
        raise ValueError(f"not a private space name: {name!r}")
    token = _SPACE.set(name)
    try:
        if name is not None:
            touch_private(name)
        yield
    finally:
        _SPACE.reset(token)


def folder(kind: str, *, private: bool = False) -> Path:
    """``home()/kind``; for private content inside a private space, that space's ``kind`` folder."""
    space = _SPACE.get() if private else None
    path = (home() / PRIVATE / space / kind) if space else (home() / kind)
    path.mkdir(parents=True, exist_ok=True)
    return path


def touch_private(name: str) -> None:
    """Mark the space as used now (its folder's mtime is its last use)."""
    path = home() / PRIVATE / name
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path)


def sweep_private(alive: Callable[[str], bool], *, grace_s: float, max_idle_s: float) -> list[str]:
    """Delete the private spaces whose visitor is gone (``alive(name)`` false, unused for
    ``grace_s``: a reconnecting browser keeps its space) or unused for ``max_idle_s`` at all.
    Returns the deleted names."""
    root = home() / PRIVATE
    if not root.is_dir():
        return []
    deleted = []
    for entry in os.scandir(root):
        try:
            idle = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if idle > max_idle_s or (idle > grace_s and not alive(entry.name)):
            shutil.rmtree(entry.path, ignore_errors=True)
            deleted.append(entry.name)
    return deleted


def cache_file(name: str) -> Path:
    """A file inside the tlcore data directory."""
    return home() / name


def read_json(name: str) -> dict:
    """A JSON dict kept in the data directory ({} when absent or unreadable)."""
    try:
        data = json.loads(cache_file(name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_write_lock = threading.Lock()


def update_json(name: str, key: str, value: Any) -> None:
    """Set ``key`` in the JSON dict ``name``; atomic replace, so readers never see half a file."""
    with _write_lock:
        data = read_json(name)
        data[key] = value
        path = cache_file(name)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0))
        tmp.replace(path)


def cached_json(name: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key``, kept in the JSON file ``name`` in the data directory."""
    data = read_json(name)
    if key not in data:
        data[key] = compute()
        update_json(name, key, data[key])
    return data[key]
