"""A shared demo keeps each visitor's files in a space of their own, deleted once they have gone."""

import io
import os
import time

import pytest
import torch

from tests.data.conftest import make_zip, png
from tlcore import data, features, paths, zoo
from tlcore.finetune import TrialConfig
from tlcore.jobs import JobManager
from tlcore.store import RunStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_HOME", str(tmp_path))
    return tmp_path


def _upload(seed: int = 0) -> io.BytesIO:
    blob = make_zip({f"{c}/{i}.png": png(seed + 10 * k + i) for k, c in enumerate("ab") for i in range(4)})
    file = io.BytesIO(blob)
    file.name = "mine.zip"
    return file


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _entries(folder) -> int:
    """Decoded datasets cached in ``folder`` (one record each, beside its pixels)."""
    return len(list(folder.glob("*.pt")))


def test_a_visitors_upload_is_cached_in_their_space_and_built_ins_stay_shared(home):
    with paths.private_space("alice"):
        mine = data.load_zip(_upload(), size=16)
        digits = data.load("digits", size=16, max_per_class=4)
    assert mine.private and not digits.private
    assert _files(home / "private" / "alice" / "datasets")  # the decoded upload…
    assert _entries(home / "datasets") == 1  # …is not beside the shared built-in
    with paths.private_space("bob"):
        data.load_zip(_upload(), size=16)  # the same zip from someone else: their own copy
    assert _entries(home / "private" / "bob" / "datasets") == 1
    data.load_zip(_upload(), size=16)  # local use (no space): the shared folder, as before
    assert _entries(home / "datasets") == 2


def test_features_of_a_private_dataset_go_to_the_space(home):
    spec = zoo.get_spec("efficientnet_lite0")
    with paths.private_space("alice"):
        mine = data.load_zip(_upload(), size=32)
        features.extract(spec, mine, block=zoo.blocks_of(spec)[1].name, batch_size=8)
    assert _files(home / "private" / "alice" / "features")
    assert not (home / "features").exists() or not _files(home / "features")


def test_a_queued_trial_writes_into_its_submitters_space(home):
    jobs = JobManager(RunStore(home / "runs.sqlite"))
    with paths.private_space("alice"):
        mine = data.load_zip(_upload(), size=32)
        jobs.submit(TrialConfig(model="efficientnet_lite0", epochs=1), mine, dataset_label="mine")  # a probe
    assert jobs.wait(120)  # the worker thread ran it after the block was left
    jobs.shutdown()
    assert jobs.store.list()[0]["status"] == "done"
    made = _files(home / "private" / "alice")
    assert any(f.startswith("features/") for f in made)  # the frozen prefix's output, in her space
    assert not (home / "features").exists() or not _files(home / "features")


def test_sweep_deletes_the_spaces_its_policy_calls_expired(home):
    for name in ("gone", "here"):
        with paths.private_space(name):
            paths.folder("renders", private=True).joinpath("x.png").write_bytes(b"png")
    old = time.time() - 600
    os.utime(home / "private" / "gone", (old, old))
    seen = {}
    deleted = paths.sweep_private(lambda name, idle: seen.setdefault(name, idle) > 300)
    assert deleted == ["gone"] and sorted(p.name for p in (home / "private").iterdir()) == ["here"]
    assert seen["gone"] == pytest.approx(600, abs=5) and seen["here"] < 5  # idle = time since last use


def test_without_a_block_the_apps_resolver_names_the_space(home, monkeypatch):
    monkeypatch.setattr(paths, "_space_of_caller", lambda: "carol")  # what a Streamlit fragment rerun gets
    mine = data.load_zip(_upload(), size=16)
    assert mine.private and _entries(home / "private" / "carol" / "datasets") == 1
    with paths.private_space("alice"):  # an explicit block (a queued trial) comes first
        assert paths.current_space() == "alice"


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x" * 65, "dot.name"])
def test_a_space_name_cannot_leave_the_private_folder(home, name):
    with pytest.raises(ValueError, match="private space name"), paths.private_space(name):
        pass


def test_deleting_runs_leaves_queued_and_running_ones(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    done = store.create(model="m", dataset="d", config={}, status="done")
    running = store.create(model="m", dataset="d", config={}, status="running")
    store.save_weights(done, {"w": torch.zeros(1)})
    assert store.delete([done, running]) == 1
    assert [r["id"] for r in store.list()] == [running]
    assert not store.weights_path(done).exists()


def test_a_space_is_not_swept_while_its_upload_is_still_being_written(home, monkeypatch):
    import threading

    from tlcore.data import sources
    from ui import demo, finetune_view

    monkeypatch.setattr(sources, "BACKGROUND_WRITE_BYTES", 0)  # written after the load returns
    release, real_write = threading.Event(), sources._write_entry
    monkeypatch.setattr(sources, "_write_entry", lambda path, ds: release.wait(30) and real_write(path, ds))
    monkeypatch.setattr(finetune_view, "jobs", lambda: type("NoJobs", (), {"active": lambda self, name: []})())
    monkeypatch.setattr(demo, "_alive", lambda name: False)  # the visitor has gone
    with paths.private_space("dana"):
        data.load_zip(_upload(), size=16)
    try:
        assert sources.writing_under(home / "private" / "dana")
        assert not sources.writing_under(home / "private" / "erin")
        assert not demo._expired("dana", demo.MAX_IDLE_S + 1)  # kept until its file has landed
    finally:
        release.set()
        sources.finish_writes()
    assert not sources.writing_under(home / "private" / "dana")
    assert demo._expired("dana", demo.MAX_IDLE_S + 1)
