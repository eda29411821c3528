"""Datasets: built-in offline sets, torchvision downloads, zips, uploads and folders, decoded
once into a uint8 tensor and cached on disk."""

from tlcore.data.archive import Skipped
from tlcore.data.builtin import PHOTOS
from tlcore.data.dataset import Dataset, Profile
from tlcore.data.errors import VALID_LAYOUT, DatasetError, DatasetUnavailableError
from tlcore.data.sources import (
    DEFAULT_SIZE,
    check_local_access,
    is_named,
    list_sources,
    load,
    load_folder,
    load_photo,
    load_tags,
    load_uploads,
    load_zip,
    local_version,
)

__all__ = [
    "DEFAULT_SIZE", "PHOTOS", "VALID_LAYOUT", "Dataset", "DatasetError", "DatasetUnavailableError", "Profile",
    "Skipped", "check_local_access", "is_named", "list_sources", "load", "load_tags", "load_folder", "load_photo", "load_uploads", "load_zip",
    "local_version",
]
