import sqlite3
import threading

import pytest
import torch

from tlcore.store import RunStore, this_process


def test_runs_persist_as_they_progress(tmp_path, gone_owner):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create(model="m", dataset="d", config={"epochs": 2}, status="running", owner=gone_owner)
    store.append_epoch(run, {"epoch": 1, "val_acc": 0.5})
    reopened = RunStore(tmp_path / "runs.sqlite")  # a server restart
    assert reopened.get(run)["history"] == [{"epoch": 1, "val_acc": 0.5}]
    assert reopened.mark_interrupted() == 1
    assert reopened.get(run)["status"] == "interrupted"
    done = reopened.create(model="m", dataset="d", config={})
    reopened.finish(done, {"val_acc": 0.9, "history": [{"epoch": 1}]})
    assert reopened.mark_interrupted() == 0  # a finished run is never touched
    assert [r["status"] for r in reopened.list()] == ["interrupted", "done"]


def test_concurrent_writers_do_not_lose_epochs(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    runs = [store.create(model="m", dataset="d", config={}) for _ in range(4)]

    def write(run_id):
        for e in range(10):
            store.append_epoch(run_id, {"epoch": e})

    threads = [threading.Thread(target=write, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(store.get(r)["history"]) == 10 for r in runs)


def test_a_sessions_runs_are_listed_without_the_others(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    mine = [store.create(model="m", dataset="d", config={"tags": {"session": "a"}}) for _ in range(2)]
    store.create(model="m", dataset="d", config={"tags": {"session": "b"}})
    store.create(model="m", dataset="d", config={})  # a CLI run: no session
    assert [r["id"] for r in store.list(session="a")] == mine
    assert store.list(session="nobody") == []
    assert len(store.list()) == 4


def test_bad_status_and_missing_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(ValueError):
        store.set_status(store.create(model="m", dataset="d", config={}), "exploded")
    with pytest.raises(KeyError):
        store.get(999)


def test_only_runs_whose_owner_is_gone_are_interrupted(tmp_path, gone_owner):
    store = RunStore(tmp_path / "runs.sqlite")
    mine = store.create(model="m", dataset="d", config={}, status="running")  # this live process
    dead = store.create(model="m", dataset="d", config={}, status="queued", owner=gone_owner)
    host, pid, _ = this_process()
    reused = store.create(model="m", dataset="d", config={}, status="running", owner=(host, pid, "1"))
    elsewhere = store.create(model="m", dataset="d", config={}, status="running", owner=("another-host", 1, None))
    assert RunStore(tmp_path / "runs.sqlite").mark_interrupted() == 2  # e.g. `tlcore runs` beside the app
    status = {r["id"]: r["status"] for r in store.list()}
    assert status[mine] == "running" and status[elsewhere] == "running"
    assert status[dead] == "interrupted"
    assert status[reused] == "interrupted" or this_process()[2] is None  # same pid, another start time


def test_a_store_from_before_owners_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, updated TEXT "
                   "NOT NULL, status TEXT NOT NULL, model TEXT NOT NULL, dataset TEXT NOT NULL, config TEXT NOT "
                   "NULL, history TEXT NOT NULL DEFAULT '[]', result TEXT, error TEXT)")
        db.execute("INSERT INTO runs (created, updated, status, model, dataset, config) VALUES "
                   "('t', 't', 'running', 'm', 'd', '{}')")
    db.close()
    store = RunStore(path)
    assert store.mark_interrupted() == 1  # no owner recorded: left by an older version, so gone
    assert store.get(store.create(model="m", dataset="d", config={}))["owner_pid"] == this_process()[1]


def test_another_hosts_run_silent_for_hours_is_taken_for_gone(tmp_path):
    import datetime as dt

    from tlcore.store import SILENT_HOURS, owner_alive

    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=SILENT_HOURS + 1)).isoformat()
    fresh = dt.datetime.now(dt.timezone.utc).isoformat()
    assert owner_alive("a-recreated-container", 1, None, old) is False
    assert owner_alive("a-recreated-container", 1, None, fresh) is True


def test_missing_or_unreadable_weights_are_a_clear_error(tmp_path):
    from tlcore.store import MissingWeightsError

    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create(model="m", dataset="d", config={})
    with pytest.raises(MissingWeightsError, match="kept no weights"):
        store.load_weights(run)
    store.weights_path(run).parent.mkdir(exist_ok=True)
    store.weights_path(run).write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="cannot be read"):
        store.load_weights(run)


def test_an_unreadable_history_is_set_aside_whole_and_a_new_one_starts(tmp_path, capsys):
    """A damaged runs.sqlite (a disk error, a half-copied file) must not stop the app or the CLI, and
    nothing of it is deleted: the file and the weights its runs numbered are moved to one dated name."""
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    old = store.create(model="m", dataset="d", config={})
    store.save_weights(old, {"w": torch.zeros(1)})
    path.write_bytes(b"garbage, not SQLite" * 100)
    fresh = RunStore(path)
    assert fresh.set_aside is not None and fresh.set_aside.read_bytes().startswith(b"garbage")
    assert (tmp_path / ("runs" + fresh.set_aside.name.removeprefix("runs.sqlite"))).joinpath("run-1.pt").exists()
    assert fresh.list() == [] and fresh.create(model="m", dataset="d", config={}) == 1
    assert not fresh.weights_path(1).exists()  # the old run 1's weights are not the new run 1's
    assert RunStore(path).set_aside is None  # the new history opens as it is


def test_the_cli_says_when_it_set_the_history_aside(tmp_path, monkeypatch, capsys):
    from tlcore.cli import main

    monkeypatch.setenv("TLCORE_HOME", str(tmp_path))  # not the suite's own history
    (tmp_path / "runs.sqlite").write_bytes(b"garbage, not SQLite" * 100)
    assert main(["runs"]) == 0
    err = capsys.readouterr().err
    assert "could not be read; it was kept as" in err and "Traceback" not in err


def test_processes_opening_one_damaged_history_at_once_set_it_aside_once(tmp_path):
    """The first sets the garbage aside and starts a new history; the others open that one."""
    import subprocess
    import sys

    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"garbage, not SQLite" * 100)
    code = f"from tlcore.store import RunStore; s = RunStore({str(path)!r}); s.create(model='m', dataset='d', config={{}})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    aside = sorted(tmp_path.glob("runs.sqlite.unreadable-*"))
    assert [a.read_bytes()[:7] for a in aside] == [b"garbage"]
    assert len(RunStore(path).list()) == 4
