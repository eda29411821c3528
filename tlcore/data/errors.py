"""Errors a user can cause, each with a message that says what to do."""

from __future__ import annotations

VALID_LAYOUT = """A valid dataset is one folder per class, images inside:
    my_data/
      cats/  img001.jpg  img002.png ...
      dogs/  img101.jpg ...
(zip that folder, upload it, or give its path; an extra top level such as my_data/train/ is fine)."""


class DatasetError(ValueError):
    """Input that cannot become a dataset (refused, with the reason and a valid layout)."""


class DatasetUnavailableError(DatasetError):
    """A download-only dataset that is not cached and cannot be fetched (offline)."""
