"""Errors a user can cause, each with a message that says what to do."""

from __future__ import annotations

from tlcore.choices import VALID_LAYOUT  # noqa: F401 — exported here, where the errors that cite it live


class DatasetError(ValueError):
    """Input that cannot become a dataset (refused, with the reason and a valid layout)."""


class DatasetUnavailableError(DatasetError):
    """A download-only dataset that is not cached and cannot be fetched (offline)."""
