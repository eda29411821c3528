"""Untrusted file collections (zip, upload, folder) → validated members, never extracted to disk.

Member names are checked before anything is read: no absolute paths, no ``..``, no symlinks,
no system clutter (``__MACOSX/``, dotfiles, ``Thumbs.db``); counts, sizes and compression
ratios are capped (settings.Limits). Bytes are read only for members that pass, and a member
whose real size exceeds its header is cut off and skipped.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tlcore.data.errors import VALID_LAYOUT, DatasetError
from tlcore.settings import Limits

CLUTTER = {"thumbs.db", "desktop.ini", ".ds_store"}
SPLIT_DIRS = {"train", "training", "val", "valid", "validation", "test", "testing"}


@dataclass(frozen=True)
class Member:
    path: str  # normalised relative POSIX path inside the collection
    size: int
    read: Callable[[], bytes]
    mtime_ns: int = 0  # a local file's modification time (keys the cache without reading it)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def skipped_note(skipped: list[Skipped], shown: int = 3) -> str:
    """' (7 files skipped: a.zip: reason; encrypted … (6 files, e.g. b.jpg))', or '' if none: a
    refusal says which files it could not use and why (an encrypted zip, an archive among the
    images), not only how many; files that share a reason are counted under it."""
    if not skipped:
        return ""
    by_reason: dict[str, list[str]] = {}
    for s in skipped:
        by_reason.setdefault(s.reason, []).append(s.path)
    listed = "; ".join(f"{paths[0]}: {reason}" if len(paths) == 1 else f"{reason} ({len(paths)} files, e.g. {paths[0]})"
                       for reason, paths in list(by_reason.items())[:shown])
    more = f"; {len(by_reason) - shown} other reasons" if len(by_reason) > shown else ""
    return f" ({len(skipped)} file{'s' * (len(skipped) > 1)} skipped: {listed}{more})"


def _clean_path(name: str) -> tuple[str | None, str | None]:
    """(normalised path, None) or (None, reason to skip)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None, "absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path escapes the folder (..)"
    if not parts:
        return None, "empty name"
    if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts) or parts[-1].lower() in CLUTTER:
        return None, "system file"
    return "/".join(parts), None


def _read_capped(opener: Callable, limit: int) -> bytes:
    with opener() as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DatasetError(f"file larger than its declared size or the {limit // 2**20} MB limit")
    return data


def zip_members(source: str | os.PathLike | object, limits: Limits) -> tuple[list[Member], list[Skipped]]:
    """Members of a zip file (path or binary file object)."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"not a readable zip archive ({err}).\n{VALID_LAYOUT}") from None
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > limits.max_members:
        raise DatasetError(f"the archive holds {len(infos):,} files; the limit is {limits.max_members:,}")
    members, skipped, total = [], [], 0
    for info in infos:
        path, why = _clean_path(info.filename)
        if why is None and stat.S_ISLNK(info.external_attr >> 16):
            why = "symbolic link"
        if why is None:
            why = _unreadable_in_zip(info, path)
        if why is None and info.file_size > limits.max_member_bytes:
            why = f"larger than {limits.max_member_bytes // 2**20} MB"
        if why is None and info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            why = f"compression ratio over {limits.max_ratio:.0f}:1 (zip bomb?)"
        if why is not None:
            skipped.append(Skipped(path or info.filename, why))
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DatasetError(f"the archive unpacks to more than {limits.max_total_bytes / 2**30:.1f} GB")
        members.append(Member(path, info.file_size,
                              lambda i=info: _read_capped(lambda: archive.open(i), limits.max_member_bytes)))
    return members, skipped


_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")


def _unreadable_in_zip(info: zipfile.ZipInfo, path: str) -> str | None:
    """Why a zip member cannot be read, said in the user's terms (zipfile's own errors name neither
    the cause nor the remedy), or None."""
    if info.flag_bits & 0x1:
        return "encrypted: a password-protected zip cannot be read (zip the folder again without a password)"
    if info.compress_type not in _READABLE_METHODS:
        return (f"compressed with a method Python cannot unpack (zip method {info.compress_type}, e.g. Deflate64); "
                "zip the folder again with standard Deflate")
    return archive_inside(path)


def archive_inside(path: str | None) -> str | None:
    """A zip or tarball among the images is not looked into: say so, rather than 'not an image'."""
    if path and path.lower().endswith(_ARCHIVES):
        return "an archive among the images: unpack it into its class folder first"
    return None


def upload_members(files: Iterable[tuple[str, bytes]], limits: Limits) -> tuple[list[Member], list[Skipped]]:
    """Members of an uploaded folder: (relative name, bytes) pairs."""
    members, skipped, total = [], [], 0
    files = list(files)
    if len(files) > limits.max_members:
        raise DatasetError(f"{len(files):,} files uploaded; the limit is {limits.max_members:,}")
    for name, data in files:
        path, why = _clean_path(name)
        why = why or archive_inside(path)
        if why is None and len(data) > limits.max_member_bytes:
            why = f"larger than {limits.max_member_bytes // 2**20} MB"
        if why is not None:
            skipped.append(Skipped(path or name, why))
            continue
        total += len(data)
        if total > limits.max_total_bytes:
            raise DatasetError(f"the upload is larger than {limits.max_total_bytes / 2**30:.1f} GB")
        members.append(Member(path, len(data), lambda d=data: d))
    return members, skipped


def folder_members(root: str | os.PathLike, limits: Limits) -> tuple[list[Member], list[Skipped]]:
    """Members of a local folder, in sorted order; symbolic links are skipped, never followed.
    One os.scandir pass: each entry's type, size and mtime come from one lstat (os.walk plus
    pathlib calls took three system calls and a relative_to per file)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.\n{VALID_LAYOUT}")
    members: list[Member] = []
    skipped: list[Skipped] = []
    total = 0
    folders = [(str(root), "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:  # e.g. a sub-folder without read permission: skipped, said why
            skipped.append(Skipped(prefix.rstrip("/") or ".", f"folder cannot be read ({err.strerror})"))
            continue
        below = []
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                below.append((entry.path, rel + "/"))
                continue
            member = _folder_member(entry, rel, limits)
            if isinstance(member, Skipped):
                skipped.append(member)
                continue
            members.append(member)
            total += member.size
            if len(members) > limits.max_members:
                raise DatasetError(f"the folder holds over {limits.max_members:,} files")
            if total > limits.max_total_bytes:
                raise DatasetError(f"the folder is larger than {limits.max_total_bytes / 2**30:.1f} GB")
        folders += below[::-1]  # depth first, in name order, as os.walk lists them
    return members, skipped


def _folder_member(entry: os.DirEntry, rel: str, limits: Limits) -> Member | Skipped:
    # A name that is not valid UTF-8 comes from os.scandir with surrogate escapes, which cannot be
    # encoded or printed: it is shown (and classed) with its bad bytes as \xe9 escapes, so two such
    # names stay two, and read by its real path.
    rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    path, why = _clean_path(rel)
    why = why or archive_inside(path)
    if why is None and entry.is_symlink():
        why = "symbolic link"
    elif why is None and not entry.is_file(follow_symlinks=False):
        why = "not a regular file"  # a FIFO or socket would block the reader
    stat = entry.stat(follow_symlinks=False) if why is None else None
    if stat is not None and stat.st_size > limits.max_member_bytes:
        why = f"larger than {limits.max_member_bytes // 2**20} MB"
    if why is not None:
        return Skipped(path or rel, why)
    full = entry.path
    return Member(path, stat.st_size, lambda: _read_capped(lambda: open(full, "rb"), limits.max_member_bytes),
                  stat.st_mtime_ns)


def assign_classes(members: list[Member]) -> tuple[list[tuple[Member, str]], list[Skipped]]:
    """Class = the first folder under the root. A single wrapping folder (``my_data/``) and
    split folders (``train/``, ``val/``, ``test/``) are looked through: we make our own split."""
    paths = [m.path.split("/") for m in members]
    depth = 0
    while True:
        tops = {p[depth] for p in paths if len(p) > depth + 1}
        nested = all(len(p) > depth + 2 for p in paths if len(p) > depth + 1)
        if len(tops) == 1 and nested:
            depth += 1
        elif tops and tops <= SPLIT_DIRS and nested:
            depth += 1
        else:
            break
    out, skipped = [], []
    for member, parts in zip(members, paths, strict=True):
        if len(parts) <= depth + 1:
            skipped.append(Skipped(member.path, "not inside a class folder"))
        else:
            out.append((member, parts[depth]))
    return out, skipped

