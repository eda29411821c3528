"""Where tlcore keeps its own files (caches, measurements, run history)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs


def home() -> Path:
    """The tlcore data directory: ``$TLCORE_HOME`` or the user's cache dir."""
    root = os.environ.get("TLCORE_HOME") or platformdirs.user_cache_dir("tlcore")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
