"""Demo mode as the app shows it: switched on from the environment or Streamlit secrets, announced
on every page, error details kept on the server."""

from __future__ import annotations

import os

import streamlit as st

from tlcore.settings import demo_caps, demo_mode

_CONFIGURED: object = None


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
    st.info("**Shared demo** — other people use this server at the same time: trials take turns, and your "
            "run history is visible only in this browser session. Caps: " + "; ".join(demo_caps()) + ".",
            icon=":material/groups:")
