"""The job queue: one at a time, positions, cancel, failure, restart, weights kept."""

import threading
import time
from collections import deque

import pytest
import torch

from tlcore import data
from tlcore.finetune import TrialCancelled, TrialConfig
from tlcore.jobs import JobManager
from tlcore.settings import limits
from tlcore.store import RunStore


@pytest.fixture(scope="module")
def tiny():
    return data.load("digits", size=32, max_per_class=10)


def probe(**kw):
    return TrialConfig(**{"model": "efficientnet_lite0", "freeze": "all", "epochs": 2, "lr": 0.05, **kw})


def _until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_jobs_run_in_order_and_are_kept(tmp_path, tiny):
    from tlcore.finetune import run_trial

    started = []

    def recorded(config, dataset, **kw):
        started.append(config.seed)
        return run_trial(config, dataset, **kw)

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=recorded)
    ids = [jobs.submit(probe(seed=s), tiny, dataset_label="digits") for s in (7, 3, 5)]
    assert [jobs.position(i) for i in ids[1:]] in ([1, 2], [2, 3])  # the first may not have started yet
    assert jobs.wait(300)
    assert started == [7, 3, 5]  # first in, first run
    runs = {r["id"]: r for r in jobs.store.list()}
    first = ids[0]
    assert all(runs[i]["status"] == "done" for i in ids)
    assert len(runs[first]["history"]) == 2 and runs[first]["result"]["val_acc"] > 0.3  # 10 classes: chance 0.1
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
    from tlcore.finetune import run_trial

    def crashes_on_seed_13(config, dataset, **kw):
        if config.seed == 13:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return run_trial(config, dataset, **kw)

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=crashes_on_seed_13)
    with pytest.raises(ValueError, match="freeze must be"):  # a bad setting is refused before queueing
        jobs.submit(TrialConfig(model="efficientnet_lite0", freeze=99), tiny, dataset_label="d")
    bad = jobs.submit(probe(epochs=1, seed=13), tiny, dataset_label="d")
    good = jobs.submit(probe(epochs=1), tiny, dataset_label="d")
    assert jobs.wait(300)
    assert jobs.store.get(bad)["status"] == "failed" and "illegal memory access" in jobs.store.get(bad)["error"]
    assert jobs.store.get(good)["status"] == "done"


def test_restart_marks_unfinished_runs_interrupted(tmp_path, gone_owner):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create(model="m", dataset="d", config={}, status="running", owner=gone_owner)
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
        TrialConfig(model="efficientnet_lite0", epochs=21).check()
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
    with pytest.raises(QueueFullError, match="room for 0 more"):
        jobs.submit(probe(), tiny, dataset_label="d")
    release.set()
    jobs.shutdown()


def test_a_list_of_trials_is_queued_whole_or_not_at_all(tmp_path, tiny):
    from tlcore.jobs import QueueFullError, Submission

    held = threading.Event()

    def blocked_trial(config, dataset, *, should_stop, **kw):
        held.wait(30)
        raise TrialCancelled([])

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=blocked_trial)
    jobs.submit(probe(), tiny, dataset_label="d")
    time.sleep(0.2)
    free = jobs.room()
    too_many = [Submission(probe(seed=i), tiny, "d") for i in range(free + 1)]
    with pytest.raises(QueueFullError, match=f"{free + 1} trials, queued together or not at all"):
        jobs.submit_many(too_many)
    one_bad = [Submission(probe(), tiny, "d"), Submission(TrialConfig(model="efficientnet_lite0", freeze=99), tiny, "d")]
    with pytest.raises(ValueError, match="freeze must be"):
        jobs.submit_many(one_bad)
    assert len(jobs.store.list()) == 1 and jobs.room() == free  # nothing of either list was queued
    assert len(jobs.submit_many(too_many[:free])) == free and jobs.room() == 0
    held.set()
    jobs.shutdown()


def test_two_queues_on_one_store_leave_each_others_trials_alone(tmp_path, tiny):
    # Two app processes (or the app and `tlcore runs`) share one history: starting the second
    # must not mark the first one's live trial interrupted.
    started, release = threading.Event(), threading.Event()

    def held_trial(config, dataset, *, should_stop, on_epoch, **kw):
        started.set()
        release.wait(60)
        raise TrialCancelled([])

    first = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=held_trial)
    run_id = first.submit(probe(), tiny, dataset_label="digits")
    assert started.wait(30)
    second = JobManager(RunStore(tmp_path / "runs.sqlite"))
    assert second.store.get(run_id)["status"] == "running"
    release.set()
    first.cancel(run_id)
    assert first.wait(60)
    first.shutdown()
    second.shutdown()


def _gated_queue(tmp_path):
    """A queue whose trials wait for ``gate`` and record the order they ran in (by seed)."""
    gate, ran = threading.Event(), []

    def gated(config, dataset, *, should_stop, on_epoch, **kw):
        gate.wait(30)
        ran.append(config.seed)
        raise TrialCancelled([])

    return JobManager(RunStore(tmp_path / "runs.sqlite"), trial=gated), gate, ran


def test_sessions_take_turns_so_one_sweep_cannot_hold_everyone_back(tmp_path, tiny):
    from tlcore.jobs import Submission

    jobs, gate, ran = _gated_queue(tmp_path)
    first = jobs.submit_many([Submission(probe(seed=0), tiny, "d", owner="alice")])[0]
    _until(lambda: jobs.position(first) == 0)  # alice's first trial holds the worker
    sweep = jobs.submit_many([Submission(probe(seed=s), tiny, "d", owner="alice") for s in (1, 2, 3)])
    bob = jobs.submit_many([Submission(probe(seed=10), tiny, "d", owner="bob")])[0]
    carol = jobs.submit_many([Submission(probe(seed=20), tiny, "d", owner="carol")])[0]
    # bob and carol have not been served yet: they come before alice's second trial, not after her sweep.
    assert [jobs.position(i) for i in (bob, carol, *sweep)] == [1, 2, 3, 4, 5]
    gate.set()
    assert jobs.wait(60)
    assert ran == [0, 10, 20, 1, 2, 3]
    assert list(jobs._served) == ["alice"]  # the book of turns keeps only what can still matter


def test_visitors_who_left_are_forgotten_without_changing_the_order(tmp_path, tiny):
    from tlcore.jobs import Submission

    jobs, gate, ran = _gated_queue(tmp_path)
    gate.set()
    for n in range(20):  # twenty visitors, one trial each, who then leave
        jobs.submit_many([Submission(probe(seed=n), tiny, "d", owner=f"v{n}")])
        assert jobs.wait(60)
    assert len(jobs._served) == 1
    gate.clear()
    first = jobs.submit_many([Submission(probe(seed=100), tiny, "d", owner="alice")])[0]
    _until(lambda: jobs.position(first) == 0)
    later = jobs.submit_many([Submission(probe(seed=s), tiny, "d", owner=o)
                              for s, o in ((101, "alice"), (5, "v5"), (200, "bob"))])
    assert [jobs.position(i) for i in later] == [3, 1, 2]  # alice was served last: she waits her turn
    gate.set()
    assert jobs.wait(60)
    assert ran[-4:] == [100, 5, 200, 101]


def test_one_session_cannot_fill_the_demo_queue(tmp_path, tiny, monkeypatch):
    from tlcore.jobs import QueueFullError, Submission

    monkeypatch.setenv("TLCORE_DEMO", "1")
    jobs, gate, _ = _gated_queue(tmp_path)
    try:
        cap = limits().max_waiting_per_session
        jobs.submit_many([Submission(probe(seed=s), tiny, "d", owner="alice") for s in range(cap)])
        with pytest.raises(QueueFullError, match=f"at most {cap} of your trials"):
            jobs.submit_many([Submission(probe(), tiny, "d", owner="alice")])
        jobs.submit_many([Submission(probe(), tiny, "d", owner="bob")])  # another visitor still gets in
    finally:
        gate.set()
        assert jobs.wait(60)


def test_the_wait_estimate_counts_the_epochs_ahead(tmp_path, tiny):
    from tlcore.finetune import EpochStats
    from tlcore.jobs import Submission

    jobs, gate, _ = _gated_queue(tmp_path)
    try:
        running = jobs.submit_many([Submission(probe(epochs=3), tiny, "d", owner="a")])[0]
        _until(lambda: jobs.position(running) == 0)
        waiting = jobs.submit_many([Submission(probe(epochs=4), tiny, "d", owner="b")])
        assert jobs.wait_estimate(waiting[0]) is None  # no epoch timed yet: no made-up figure
        jobs._epoch_seconds.extend([2.0, 2.0, 4.0])
        assert jobs.wait_estimate(waiting[0]) == pytest.approx(3 * 2.0)  # the running trial's 3 epochs
        jobs._epoch_done(jobs._running, EpochStats(1, 0, 0, 0, 0, 2.0))  # as the trial reports one
        assert jobs.wait_estimate(waiting[0]) == pytest.approx(2 * 2.0)
    finally:
        gate.set()
        assert jobs.wait(60)


def test_the_wait_estimate_times_each_trial_ahead_by_its_own_kind(tmp_path, tiny):
    """A probe's epochs (0.01 s) said a full fine-tune ahead would take seconds, not minutes."""
    from tlcore.finetune import EpochStats
    from tlcore.jobs import Submission

    jobs, gate, _ = _gated_queue(tmp_path)
    try:
        running = jobs.submit_many([Submission(probe(epochs=2), tiny, "d", owner="a")])[0]
        _until(lambda: jobs.position(running) == 0)
        full = TrialConfig(model="efficientnet_lite0", freeze=0, epochs=5)
        ahead, waiting = jobs.submit_many([Submission(full, tiny, "d", owner="a"),
                                           Submission(probe(epochs=2), tiny, "d", owner="a")])
        jobs._epoch_done(jobs._running, EpochStats(1, 0, 0, 0, 0, 0.01))  # the running probe's first epoch
        assert jobs.wait_estimate(waiting) == pytest.approx(0.01 + 5 * 0.01)  # no full fine-tune timed yet
        jobs._kind_seconds[_kind_of(jobs, ahead)] = deque([3.0])  # a full fine-tune of these images, timed before
        assert jobs.wait_estimate(waiting) == pytest.approx(0.01 + 5 * 3.0)
    finally:
        gate.set()
        assert jobs.wait(60)


def _kind_of(jobs, run_id: int) -> tuple:
    from tlcore.jobs import _kind

    return _kind(next(j for j in jobs._queue if j.run_id == run_id))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cpu_trials_run_on_threads_that_end_with_them_and_gpu_trials_on_one_thread(tmp_path, tiny, device,
                                                                                   monkeypatch):
    """A live thread that has run torch keeps an OpenMP team that slowed every other thread's CPU
    work 2.2× (measured): the queue's own worker never runs a trial, and no CPU trial's thread
    outlives it. cuDNN keeps its plans per thread: GPU trials share one thread, which stays.
    (The trials' device is patched: a GPU's is only told apart here, the trial runs where it can.)"""
    from tlcore import jobs as jobs_module
    from tlcore.finetune import run_trial

    monkeypatch.setattr(jobs_module._Job, "model_device", lambda self: torch.device(device))
    threads = []

    def recorded(config, dataset, **kw):
        threads.append(threading.current_thread())
        return run_trial(config, dataset, device="cpu", **kw)

    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"), trial=recorded)
    for seed in (1, 2, 13):
        jobs.submit(probe(seed=seed, epochs=1), tiny, dataset_label="digits")
    assert jobs.wait(300)
    assert len(threads) == 3 and all(t is not jobs._thread for t in threads)
    if device == "cpu":
        assert len(set(threads)) == 3 and not any(t.is_alive() for t in threads)
    else:
        assert len(set(threads)) == 1 and threads[0].is_alive()
    assert all(r["status"] == "done" for r in jobs.store.list())


def test_a_trial_past_the_servers_time_cap_stops_and_says_why(tmp_path, tiny, monkeypatch):
    """A demo caps a trial's time, not only its epochs: one visitor's long trial must not hold the
    one queue for hours. It stops at its next batch, its curve so far kept, and says why."""
    import tlcore.jobs
    from tlcore.settings import Limits

    monkeypatch.setattr(tlcore.jobs, "limits", lambda: Limits(max_trial_seconds=0.0))
    jobs = JobManager(RunStore(tmp_path / "runs.sqlite"))
    run_id = jobs.submit(probe(epochs=3), tiny, dataset_label="d")
    assert jobs.wait(120)
    run = jobs.store.get(run_id)
    assert run["status"] == "cancelled" and "cap of 0 min per trial after 0 epoch(s)" in run["error"]
    monkeypatch.setattr(tlcore.jobs, "limits", Limits)  # no cap: the same trial runs to its end
    again = jobs.submit(probe(epochs=3), tiny, dataset_label="d")
    assert jobs.wait(120) and jobs.store.get(again)["status"] == "done" and not jobs.store.get(again)["error"]
