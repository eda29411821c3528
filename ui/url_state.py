"""Keep a page's view in the URL query string, so a shared link reproduces it.

Widgets take their initial value from the URL (once per session), and the page writes the
current values back after drawing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st


def seed(key: str, default: Any, parse: Callable[[str], Any] = str) -> None:
    """Put the URL's value (or ``default``) into session state before the widget is drawn."""
    if key in st.session_state:
        return
    raw = st.query_params.get(key)
    try:
        st.session_state[key] = parse(raw) if raw not in (None, "") else default
    except (TypeError, ValueError):  # a hand-edited link must not break the page
        st.session_state[key] = default


def seed_list(key: str, default: list[str], allowed: list[str]) -> None:
    """A comma-separated list in the URL, keeping only values the widget offers."""
    if key in st.session_state:
        return
    raw = st.query_params.get(key)
    values = [v for v in raw.split(",") if v in allowed] if raw else default
    st.session_state[key] = values


def write(values: dict[str, Any], keep: tuple[str, ...] = ()) -> None:
    """Reflect the current view in the URL (lists comma-joined, bools as 1/0); parameters named in
    ``keep`` (another part of the app's, e.g. the active dataset) stay as they are."""
    encoded = {k: v for k, v in st.query_params.items() if k in keep}
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        encoded[key] = str(value)
    if dict(st.query_params) != encoded:
        st.query_params.from_dict(encoded)


def as_bool(raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes", "on")
