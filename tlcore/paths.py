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
from typing import Any, BinaryIO

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
_space_of_caller: Callable[[], str | None] = lambda: None  # noqa: E731 — set by the app (use_space_of)


def use_space_of(resolver: Callable[[], str | None]) -> None:
    """Tell tlcore whose private space the calling thread works for when no ``private_space``
    block says so (the app: the visitor of the Streamlit session running the script, fragment
    reruns included). The engine stays free of the UI framework."""
    global _space_of_caller
    _space_of_caller = resolver


def current_space() -> str | None:
    """The private space work done now belongs to (None: none, as in local use)."""
    name = _SPACE.get()
    return name if name is not None else _space_of_caller()


@contextlib.contextmanager
def private_space(name: str | None) -> Iterator[None]:
    """Inside this block, files made from a visitor's own data (their uploads' decoded tensors and
    features, renders of their fine-tuned runs) go to ``home()/private/<name>``, which
    ``sweep_private`` deletes when the visitor has gone (a queued trial runs in its submitter's).
    ``None``: no private space."""
    if name is not None:
        mark_used(name)
    token = _SPACE.set(name)
    try:
        yield
    finally:
        _SPACE.reset(token)


def folder(kind: str, *, private: bool = False) -> Path:
    """``home()/kind``; for private content inside a private space, that space's ``kind`` folder."""
    space = current_space() if private else None
    path = (home() / PRIVATE / space / kind) if space else (home() / kind)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_used(name: str) -> None:
    """Mark the space as used now (its folder's mtime is its last use)."""
    if not _SPACE_NAME.fullmatch(name):
        raise ValueError(f"not a private space name: {name!r}")
    path = home() / PRIVATE / name
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path)


def sweep_private(expired: Callable[[str, float], bool]) -> list[str]:
    """Delete the private spaces for which ``expired(name, seconds since last use)`` says so
    (the app's policy: the visitor has gone, or has not used it for hours). Returns their names."""
    root = home() / PRIVATE
    if not root.is_dir():
        return []
    deleted = []
    for entry in os.scandir(root):
        try:
            idle = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if expired(entry.name, idle):
            shutil.rmtree(entry.path, ignore_errors=True)
            deleted.append(entry.name)
    return deleted


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it over ``path``: a reader
    never sees half a file. The temporary name is unique per process and thread (Streamlit
    sessions are threads of one process)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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
        write_atomically(cache_file(name), lambda f: f.write(json.dumps(data, indent=0).encode()))


def cached_json(name: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key``, kept in the JSON file ``name`` in the data directory."""
    data = read_json(name)
    if key not in data:
        data[key] = compute()
        update_json(name, key, data[key])
    return data[key]
