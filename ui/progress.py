"""Progress bars for the engine's passes over a dataset, and the shared cache their results live in.

A pass of a model over a few thousand images takes a minute on a laptop CPU: a spinner leaves
the user guessing, a bar with a count and the time left does not. But a function cached with
``st.cache_data`` replays on a later hit what it drew, and cannot replay updates to a bar drawn
outside it (``CacheReplayClosureError``), so work that reports progress is cached by ``shared``
instead: one bounded cache per name, shared by every session like ``st.cache_data``, each
caller getting its own copy.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import streamlit as st

from tlcore.features import OnStep

T = TypeVar("T")


@contextlib.contextmanager
def bar(label: str) -> Iterator[OnStep]:
    """An ``on_step(done, total)`` for the engine that draws a bar at its first call (so work
    served from a cache shows nothing), with the count and the time left; gone afterwards."""
    holder = st.empty()
    started = time.perf_counter()

    def on_step(done: int, total: int) -> None:
        holder.progress(min(done / max(total, 1), 1.0), text=f"{label} — {status(done, total, started)}")

    try:
        yield on_step
    finally:
        holder.empty()


def status(done: int, total: int, started: float, unit: str = "images") -> str:
    """"412 of 1,797 images · 9 s, about 30 s left" (the estimate once there is something to go on)."""
    elapsed = time.perf_counter() - started
    text = f"{done:,} of {total:,} {unit} · {elapsed:.0f} s"
    if 0 < done < total and elapsed >= 2:
        text += f", about {elapsed * (total - done) / done:.0f} s left"
    return text


class _Shared:
    """Values by key, newest last, at most ``size``; one lock per key being computed, so two
    sessions asking for the same thing compute it once."""

    def __init__(self, size: int):
        self.size = size
        self.values: OrderedDict[Hashable, object] = OrderedDict()
        self.lock = threading.Lock()
        self.computing: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> tuple[bool, object]:
        with self.lock:
            if key in self.values:
                self.values.move_to_end(key)
                return True, self.values[key]
            return False, None

    def put(self, key: Hashable, value: object) -> None:
        with self.lock:
            self.values[key] = value
            while len(self.values) > self.size:
                self.values.popitem(last=False)

    def key_lock(self, key: Hashable) -> threading.Lock:
        with self.lock:
            return self.computing.setdefault(key, threading.Lock())

    def done_with(self, key: Hashable) -> None:
        with self.lock:
            self.computing.pop(key, None)


@st.cache_resource(show_spinner=False)
def _store(name: str, size: int) -> _Shared:
    return _Shared(size)


def shared(name: str, key: Hashable, compute: Callable[[], T], *, max_entries: int = 32) -> T:
    """``compute()``'s value for ``key``, computed once for every session (a copy each time: a
    page that changed it would change it for everyone). A ``compute`` interrupted by a rerun, or
    failing, stores nothing."""
    store = _store(name, max_entries)
    found, value = store.get(key)
    if not found:
        lock = store.key_lock(key)
        if not lock.acquire(blocking=False):  # another session is computing it: wait for theirs
            with st.spinner("Another session is computing the same thing; waiting for it…"):
                lock.acquire()
        try:
            found, value = store.get(key)
            if not found:
                value = compute()
                store.put(key, value)
        finally:
            lock.release()
            store.done_with(key)
    return copy.deepcopy(value)
