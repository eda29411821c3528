"""The disk budget of the rebuildable caches (decoded datasets, activations, renders): the least
recently used entries go first, an entry's files go together, nothing else is touched."""

import contextlib
import os
import time
from pathlib import Path

import pytest
import torch

from tlcore import data, paths, settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_HOME", str(tmp_path))
    monkeypatch.setattr(paths, "_usage", {"bytes": None, "scanned": 0.0})  # this process's count starts afresh
    return tmp_path


def put(path, age_s: float, size: int = 1000):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_the_least_recently_used_entries_go_first_and_an_entrys_files_go_together(home):
    oldest = [put(home / "datasets" / "a.pt", 300), put(home / "datasets" / "a.npy", 310)]
    older = put(home / "features" / "b.pt", 200)
    recent = [put(home / "renders" / "c.png", 100), put(home / "renders" / "c.json", 100)]
    visitor = put(home / "private" / "visitor1" / "datasets" / "d.pt", 50)
    history = put(home / "runs.sqlite", 1000)  # not a cache: never trimmed
    live_tmp = put(home / "features" / "e.pt.123-4.tmp", 1)  # a write in progress
    dead_tmp = put(home / "features" / "f.pt.123-5.tmp", 7200)  # a write that died
    assert paths.cache_usage() == 6000
    freed = paths.trim_caches(budget=3500)
    assert freed == 3000 and paths.cache_usage() == 3000
    assert not any(p.exists() for p in [*oldest, older, dead_tmp])
    assert all(p.exists() for p in [*recent, visitor, history, live_tmp])


def test_the_entry_just_written_is_kept_even_over_the_budget(home):
    put(home / "datasets" / "old.pt", 100)
    new = put(home / "datasets" / "new.npy", 0, size=5000)
    paths.trim_caches(budget=0, keep=new.with_suffix(".pt"))
    assert [p.name for p in (home / "datasets").iterdir()] == ["new.npy"]


def test_a_trim_goes_below_the_budget_and_leaves_what_is_not_an_entry(home, monkeypatch):
    for i in range(10):
        put(home / "features" / f"{i:02d}.pt", 100 - i)
    folder = home / "features" / "somebodys_folder"
    folder.mkdir()
    os.utime(folder, (0, 0))
    dot = put(home / "features" / ".keep", 1000)
    monkeypatch.setenv("TLCORE_CACHE_GB", str(9500 / 2**30))
    paths.write_atomically(home / "features" / "new.pt", lambda f: f.write(b"x" * 1000))  # 11,000 > 9,500
    assert paths.cache_usage() <= 0.9 * 9500  # room for the next writes without a rescan each
    assert (home / "features" / "new.pt").exists() and folder.is_dir() and dot.exists()
    assert not (home / "features" / "00.pt").exists()  # the oldest went first


def test_an_entry_that_cannot_be_deleted_is_left_and_the_write_stands(home, monkeypatch):
    put(home / "features" / "old.pt", 100)
    real_unlink = Path.unlink

    def refuse(self, missing_ok=False):
        if self.name == "old.pt":
            raise PermissionError("not yours")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    monkeypatch.setenv("TLCORE_CACHE_GB", "0")
    paths.write_atomically(home / "features" / "new.pt", lambda f: f.write(b"x" * 10))
    assert (home / "features" / "new.pt").exists() and (home / "features" / "old.pt").exists()


def age(files, seconds: float) -> None:
    for f in files:
        os.utime(f, (time.time() - seconds, time.time() - seconds))


def test_a_read_marks_a_dataset_used_and_writes_past_the_budget_trim(home, monkeypatch):
    def files() -> set:
        return set((home / "datasets").iterdir())

    first = data.load("digits", size=16, max_per_class=20, seed=0)
    of_first = files()
    monkeypatch.setenv("TLCORE_CACHE_GB", str(2.5 * sum(f.stat().st_size for f in of_first) / 2**30))
    second = data.load("digits", size=16, max_per_class=20, seed=1)
    of_second = files() - of_first
    age(of_first, 600)  # both a while ago, the first the older
    age(of_second, 300)
    assert torch.equal(data.load("digits", size=16, max_per_class=20, seed=0).images, first.images)  # a read
    data.load("digits", size=16, max_per_class=20, seed=2)  # room for two: the least recently used goes
    assert of_first <= files() and not of_second & files() and len(files()) == 4
    assert paths.cache_usage() <= settings.cache_budget()
    again = data.load("digits", size=16, max_per_class=20, seed=1)  # a dropped entry is made again
    assert torch.equal(again.images, second.images) and again.fingerprint == second.fingerprint


@pytest.mark.parametrize(("value", "expected"), [("", 10 * 2**30), ("0.5", 2**29), ("lots", 10 * 2**30),
                                                 ("-1", 10 * 2**30), ("inf", 10 * 2**30)])
def test_the_budget_comes_from_the_environment_and_a_typo_keeps_the_default(monkeypatch, value, expected):
    monkeypatch.setenv("TLCORE_CACHE_GB", value)
    monkeypatch.delenv("TLCORE_DEMO", raising=False)
    with pytest.warns(UserWarning, match="TLCORE_CACHE_GB") if value in ("lots", "-1", "inf") else contextlib.nullcontext():
        assert settings.cache_budget() == expected



@pytest.mark.parametrize(("value", "expected"), [("", os.cpu_count() or 2), ("3", 3), ("0", os.cpu_count() or 2),
                                                 ("many", os.cpu_count() or 2), ("²", os.cpu_count() or 2)])
def test_decoding_threads_come_from_the_environment_and_a_typo_keeps_the_default(monkeypatch, value, expected):
    monkeypatch.setenv("TLCORE_DECODE_THREADS", value)
    with pytest.warns(UserWarning, match="TLCORE_DECODE_THREADS") if value in ("0", "many", "²") else contextlib.nullcontext():
        assert settings.decode_threads() == expected
