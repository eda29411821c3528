"""The job queue: one at a time, positions, cancel, failure, restart, weights kept."""

import threading
import time

import pytest

from tlcore import data
from tlcore.finetune import TrialConfig
from tlcore.jobs import JobManager
from tlcore.store import RunStore


@pytest.fixture(scope="module")
def tiny():
    return data.load("digits", size=32, max_per_class=10)


def probe(**kw):
    return TrialConfig(**{"model": "efficientnet_lite0", "freeze": "all", "epochs": 2, "lr": 0.05, **kw})


def test_jobs_run_in_order_and_are_kept(tmp_path, tiny):
    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"))
    first = jobs.submit(probe(), tiny, dataset_label="digits")
    second = jobs.submit(probe(seed=1), tiny, dataset_label="digits")
    assert jobs.position(second) in (1, 2)
    assert jobs.wait(300)
    runs = {r["id"]: r for r in jobs.store.list()}
    assert runs[first]["status"] == runs[second]["status"] == "done"
    assert len(runs[first]["history"]) == 2 and runs[first]["result"]["val_acc"] >= 0
    state = jobs.store.load_weights(first)
    assert state["weight"].shape[0] == 10  # the probe's head, loadable with weights_only=True


def test_cancel_running_and_queued(tmp_path, tiny):
    started = threading.Event()

    def slow_trial(config, dataset, *, should_stop, on_epoch, **kw):
        started.set()
        from tlcore.finetune import TrialCancelled
        while not should_stop():
            time.sleep(0.01)
        raise TrialCancelled([])

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=slow_trial)
    running = jobs.submit(probe(), tiny, dataset_label="d")
    waiting = jobs.submit(probe(), tiny, dataset_label="d")
    assert started.wait(10)
    assert jobs.position(running) == 0 and jobs.position(waiting) == 1
    jobs.cancel(waiting)
    jobs.cancel(running)
    assert jobs.wait(30)
    assert [r["status"] for r in jobs.store.list()] == ["cancelled", "cancelled"]


def test_a_failing_trial_is_marked_and_the_worker_survives(tmp_path, tiny):
    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"))
    bad = jobs.submit(TrialConfig(model="efficientnet_lite0", freeze=99), tiny, dataset_label="d")
    good = jobs.submit(probe(epochs=1), tiny, dataset_label="d")
    assert jobs.wait(300)
    assert jobs.store.get(bad)["status"] == "failed" and "freeze must be" in jobs.store.get(bad)["error"]
    assert jobs.store.get(good)["status"] == "done"


def test_restart_marks_unfinished_runs_interrupted(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create(model="m", dataset="d", config={}, status="running")
    JobManager(RunStore(tmp_path / "runs.sqlite"))  # a new server process
    assert store.get(run)["status"] == "interrupted"


def test_shutdown_stops_a_running_trial_and_marks_it_and_the_queue_interrupted(tmp_path, tiny):
    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"))
    run = jobs.submit(probe(epochs=50), tiny, dataset_label="d")
    waiting = jobs.submit(probe(epochs=50), tiny, dataset_label="d")
    deadline = time.time() + 60
    while jobs.store.get(run)["status"] != "running" and time.time() < deadline:
        time.sleep(0.05)
    jobs.shutdown()
    assert not jobs._thread.is_alive()
    assert jobs.store.get(run)["status"] in ("interrupted", "done")
    assert jobs.store.get(waiting)["status"] == "interrupted"


def test_demo_mode_caps_epochs_and_the_queue(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("TLCORE_DEMO", "1")
    with pytest.raises(ValueError, match="at most 20 epochs"):
        TrialConfig(model="efficientnet_lite0", epochs=21).check(9)
    release = threading.Event()

    def blocked_trial(config, dataset, *, should_stop, **kw):
        from tlcore.finetune import TrialCancelled
        while not (release.is_set() or should_stop()):
            time.sleep(0.01)
        raise TrialCancelled([])

    from tlcore.jobs import QueueFullError

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=blocked_trial)
    jobs.submit(probe(), tiny, dataset_label="d")  # runs (or is about to)
    time.sleep(0.2)
    for _ in range(jobs.room()):
        jobs.submit(probe(), tiny, dataset_label="d")
    with pytest.raises(QueueFullError, match="queue is full"):
        jobs.submit(probe(), tiny, dataset_label="d")
    release.set()
    jobs.shutdown()
