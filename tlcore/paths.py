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
    sessions are threads of one process). A cache file counts against the cache budget."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    if path.parent.name in CACHE_KINDS:
        with contextlib.suppress(OSError):  # keeping within the budget is best effort: the write stands
            _count_written(path)


# --- the disk budget of what is rebuilt on demand ---------------------------------------------
# Decoded datasets, activations and renders are caches: any entry can go and is made again when
# asked for. Every new resolution, cap or seed makes new entries (a 224-px decode of 5,000 images
# is 750 MB), so without a bound a shared demo's disk fills and every visitor's writes fail. The
# least recently used entries go first; a read marks an entry used (``touch``).

CACHE_KINDS = ("datasets", "features", "renders")
TMP_SUFFIX = ".tmp"
_STALE_TMP_S = 3600.0  # a temporary file this old belongs to a write that died
_RESCAN_S = 600.0  # other processes (the CLI beside the app) write too: look again this often
_usage_lock = threading.Lock()
_usage: dict[str, float | None] = {"bytes": None, "scanned": 0.0}


def touch(path: Path) -> None:
    """Mark a cache entry as used now (its mtime is its last use)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _scan(folder: Path) -> list[os.DirEntry]:
    """A folder's entries; none when it has gone meanwhile (a private space swept by another thread)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


def _cache_folders() -> Iterator[Path]:
    root = home()
    for base in (root, *(Path(e.path) for e in _scan(root / PRIVATE) if e.is_dir())):
        for kind in CACHE_KINDS:
            yield base / kind


def _entry(path: Path) -> Path:
    """The cache entry a file belongs to: its folder and the name before the first dot (a dataset's
    record and pixels, a render's PNG and JSON are one entry)."""
    return path.parent / path.name.split(".", 1)[0]


def cache_entries() -> list[tuple[float, int, Path, list[Path]]]:
    """Every cache entry as (last use, bytes, entry, files), oldest first. Stale temporary files
    are deleted on the way; live ones are left to their writers."""
    groups: dict[Path, list] = {}
    now = time.time()
    for folder in _cache_folders():
        for e in _scan(folder):
            try:
                if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                    continue  # only the files tlcore names (hex keys); nothing else is deleted
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue  # deleted meanwhile
            if e.name.endswith(TMP_SUFFIX):
                if now - st.st_mtime > _STALE_TMP_S:
                    Path(e.path).unlink(missing_ok=True)
                continue
            group = groups.setdefault(_entry(Path(e.path)), [0.0, 0, []])
            group[0], group[1] = max(group[0], st.st_mtime), group[1] + st.st_size
            group[2].append(Path(e.path))
    return sorted((used, size, entry, files) for entry, (used, size, files) in groups.items())


def cache_usage() -> int:
    """Bytes the caches take now, as this process last counted them (a scan the first time)."""
    with _usage_lock:
        if _usage["bytes"] is None:
            _usage["bytes"], _usage["scanned"] = sum(e[1] for e in cache_entries()), time.time()
        return int(_usage["bytes"])


_LOW_WATER = 0.9  # a trim goes down to this share of the budget, so the next writes do not each rescan


def trim_caches(budget: int | None = None, *, keep: Path | None = None) -> int:
    """When the caches take more than ``budget`` bytes (default: ``settings.cache_budget()``), delete
    the least recently used entries until they take 90 % of it; never the entry of ``keep``, and an
    entry that cannot be deleted is left. Returns the bytes freed."""
    from tlcore.settings import cache_budget

    budget = cache_budget() if budget is None else budget
    kept = _entry(keep) if keep is not None else None
    with _usage_lock:
        entries = cache_entries()
        total, freed = sum(e[1] for e in entries), 0
        target = budget * _LOW_WATER if total > budget else total
        for _, size, entry, files in entries:
            if total - freed <= target:
                break
            if entry == kept:
                continue
            try:
                for f in files:
                    f.unlink(missing_ok=True)
            except OSError:
                continue  # another user's file in a shared folder, say: not ours to force
            freed += size
        _usage["bytes"], _usage["scanned"] = total - freed, time.time()
    return freed


def _count_written(path: Path) -> None:
    """Add a new cache file to the running count; trim when the count passes the budget (or when
    the last scan is old, since other processes write too)."""
    from tlcore.settings import cache_budget

    try:
        size = path.stat().st_size
    except OSError:
        return
    with _usage_lock:
        counted = _usage["bytes"] is not None
        if counted:
            _usage["bytes"] += size
        due = not counted or _usage["bytes"] > cache_budget() or time.time() - _usage["scanned"] > _RESCAN_S
    if due:
        trim_caches(keep=path)


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
    update_json_many(name, {key: value})


def update_json_many(name: str, items: dict[str, Any]) -> None:
    """Set several keys of the JSON dict ``name`` in one read and one atomic write."""
    with _write_lock:
        data = read_json(name)
        data.update(items)
        write_atomically(cache_file(name), lambda f: f.write(json.dumps(data, indent=0).encode()))


def cached_json(name: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key``, kept in the JSON file ``name`` in the data directory."""
    data = read_json(name)
    if key not in data:
        data[key] = compute()
        update_json(name, key, data[key])
    return data[key]
