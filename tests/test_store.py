import threading

import pytest

from tlcore.store import RunStore


def test_runs_persist_as_they_progress(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create(model="m", dataset="d", config={"epochs": 2}, status="running")
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


def test_bad_status_and_missing_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(ValueError):
        store.set_status(store.create(model="m", dataset="d", config={}), "exploded")
    with pytest.raises(KeyError):
        store.get(999)
