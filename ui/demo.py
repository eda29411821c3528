"""Demo mode as the app shows it: switched on from the environment or Streamlit secrets, announced
on every page, error details kept on the server, and each visitor's files in a private space that
is deleted when they have gone."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from tlcore import paths
from tlcore.data import sources
from tlcore.settings import demo_caps, demo_mode

_CONFIGURED: object = None
GRACE_S = 180  # a visitor's space outlives their session this long (Streamlit keeps a
# disconnected session 120 s by default, so a reconnecting browser finds its files)
MAX_IDLE_S = 2 * 3600  # and is deleted after this long unused, even with the tab left open
SWEEP_EVERY_S = 60
_sessions: dict[str, str] = {}  # visitor → Streamlit session id, this process's live visitors
_sweep_lock = threading.Lock()
_last_sweep = 0.0


def configure() -> None:
    """``TLCORE_DEMO`` from Streamlit secrets (Community Cloud, Spaces) unless the environment sets it;
    in demo mode uncaught errors show a generic message and their details go to the server's log."""
    if "TLCORE_DEMO" not in os.environ:
        try:
            value = st.secrets.get("TLCORE_DEMO")
        except (FileNotFoundError, KeyError, st.errors.StreamlitSecretNotFoundError):
            value = None  # no secrets file: the environment alone decides
        if value is not None:
            os.environ["TLCORE_DEMO"] = str(value).lower()
    global _CONFIGURED
    if _CONFIGURED is None:  # what config.toml or the command line chose, kept outside demo mode
        _CONFIGURED = st.get_option("client.showErrorDetails")
    st.set_option("client.showErrorDetails", "none" if demo_mode() else _CONFIGURED)


def banner() -> None:
    if not demo_mode():
        return
    st.info("**Shared demo** — start on **Data** (a built-in set or your own images), then see where it sits "
            "on the **Strategy** matrix and try freeze depths in the **Fine-tune lab**. Other people use this "
            "server at the same time: trials take turns; your "
            "run history and what is made from your uploads are visible only in this browser (a refresh keeps "
            "them) and deleted a few minutes after you leave. Caps: " + "; ".join(demo_caps()) + ".",
            icon=":material/groups:")


COOKIE = "tlx_visitor"
_VISITOR_ID = re.compile(r"[0-9a-f]{32}")  # it names a folder: nothing else is taken from a cookie


def visitor() -> str:
    """This browser's id: its trials' owner in the queue's fair order and, in demo mode, the only
    one that sees them and the name of its private space. Kept in a cookie, so a refreshed page
    (a new Streamlit session) is the same visitor and still sees, follows and can cancel its runs;
    where the browser refuses the cookie (a third-party iframe), each session is a new visitor."""
    if "visitor" not in st.session_state:
        st.session_state.visitor = kept_visitor(st.context.cookies.get(COOKIE)) or uuid.uuid4().hex
    return st.session_state.visitor


def kept_visitor(cookie: object) -> str | None:
    """The id a visitor cookie holds, if it is one this app could have set (AppTest has no cookies)."""
    return cookie if isinstance(cookie, str) and _VISITOR_ID.fullmatch(cookie) else None


def keep_visitor() -> None:
    """Set the visitor cookie in the browser when the session did not bring it (an element on every
    run meanwhile: the browser runs its script once, when it first shows it)."""
    if st.context.cookies.get(COOKIE) == visitor():
        return
    st.html(f"<script>document.cookie = '{COOKIE}={visitor()}; path=/; max-age={MAX_IDLE_S}; SameSite=Strict';"
            "</script>", unsafe_allow_javascript=True)


def _space_of_this_run() -> str | None:
    """The visitor whose script (or fragment) runs on this thread, in demo mode; else None."""
    if not demo_mode() or get_script_run_ctx(suppress_warning=True) is None:
        return None
    return visitor()


paths.use_space_of(_space_of_this_run)


def mark_visit() -> None:
    """Each run of a page in demo mode: the visitor's space is in use, and gone visitors' are swept."""
    if not demo_mode():
        return
    ctx = get_script_run_ctx()
    if ctx is not None:
        _sessions[visitor()] = ctx.session_id
    paths.mark_used(visitor())
    sweep_gone_visitors()


def _alive(name: str) -> bool:
    """Whether a visitor's Streamlit session is still open (no server runtime, as in AppTest: yes)."""
    from streamlit import runtime

    if not runtime.exists():
        return True
    session = _sessions.get(name)
    return session is not None and runtime.get_instance().is_active_session(session)


def _expired(name: str, idle_s: float) -> bool:
    """A space goes once its visitor has been gone GRACE_S (their queued or running trials are
    cancelled first, and the space stays until those have stopped), or after MAX_IDLE_S unused."""
    from ui.finetune_view import jobs  # the queue lives with the Fine-tune lab

    gone = idle_s > GRACE_S and not _alive(name)
    active = jobs().active(name)
    if gone:
        for run_id in active:  # nobody is left to see them
            jobs().cancel(run_id)
    writing = sources.writing_under(paths.home() / paths.PRIVATE / name)  # its upload, decoded
    return not active and not writing and (gone or idle_s > MAX_IDLE_S)


def sweep_gone_visitors(*, force: bool = False) -> list[str]:
    """At most once a minute: delete the private spaces of visitors who have gone, and their
    finished runs (no one can see them any more: demo history is per session)."""
    global _last_sweep
    with _sweep_lock:
        if not force and time.monotonic() - _last_sweep < SWEEP_EVERY_S:
            return []
        _last_sweep = time.monotonic()
        gone = paths.sweep_private(_expired)
    if gone:
        from ui.finetune_view import jobs

        store = jobs().store
        store.delete([r["id"] for r in store.list() if (r["config"].get("tags") or {}).get("session") in gone])
        for name in gone:
            _sessions.pop(name, None)
    return gone
