"""Background training jobs: one worker (one GPU queue), progress per epoch, cancel, and every
state change written to the run store as it happens.

Fair order: trials carry their owner (a browser); the worker takes owners in turn, the
one served least recently first, so one visitor's sweep cannot hold everyone else back.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import queue
import statistics
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tlcore import paths
from tlcore.data import Dataset
from tlcore.device import pick_device, working
from tlcore.finetune import TrialCancelled, TrialConfig, run_trial
from tlcore.settings import limits
from tlcore.store import RunStore


class QueueFullError(ValueError):
    """Too many trials waiting (a shared server must not queue unbounded work)."""


@dataclass(frozen=True)
class Submission:
    """One trial to queue: its config, data, the data's label in the history, the shared model
    it starts from (copied by the trial) and tags kept with it (a sweep's or validation's id)."""

    config: TrialConfig
    dataset: Dataset
    dataset_label: str
    model: torch.nn.Module | None = None
    tags: dict = field(default_factory=dict)
    owner: str = ""  # who queued it (a browser); "" for the CLI and scripts


@dataclass
class _Job:
    run_id: int
    config: TrialConfig
    dataset: Dataset
    model: torch.nn.Module | None
    owner: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    epochs_done: int = 0  # counted here, so a wait estimate needs no store read
    # The submitter's private space (files made from their data): the worker runs the trial in it.
    space: str | None = field(default_factory=paths.current_space)

    def model_device(self) -> torch.device:
        """Where the trial trains: its model's device, else the one run_trial picks."""
        return next(self.model.parameters()).device if self.model is not None else pick_device()


def _kind(job: _Job) -> tuple:
    """What decides a trial's seconds per epoch: the network, what trains, and the data."""
    c = job.config
    return (c.model, c.pretrained, c.freeze, c.probe_block, c.bn_mode, c.batch_size, job.dataset.fingerprint,
            job.dataset.size)


class _Runner:
    """One long-lived daemon thread, started when first needed, that runs what it is given."""

    def __init__(self, name: str):
        self._name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[], None]) -> None:
        """``work()`` on the runner's thread; returns (or raises) when it has."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        done = concurrent.futures.Future()
        self._tasks.put((work, done))
        done.result()

    def _serve(self) -> None:
        while True:
            work, done = self._tasks.get()
            try:
                work()
            except BaseException as err:  # handed to the caller: the runner goes on
                done.set_exception(err)
            else:
                done.set_result(None)


class JobManager:
    """Runs trials one at a time in a daemon thread. Create one per process (the app caches it)."""

    def __init__(self, store: RunStore | None = None,
                 trial: Callable[..., object] = run_trial):
        self.store = store or RunStore()
        self.store.mark_interrupted()  # whatever a previous process left running
        self._trial = trial
        self._lock = threading.Condition()
        self._queue: list[_Job] = []
        self._running: _Job | None = None
        self._closing = False
        self._served: dict[str, int] = {}  # owner → when it last got the worker (a counter)
        self._turn = itertools.count(1)
        self._epoch_seconds: deque[float] = deque(maxlen=50)  # recent epochs, for wait estimates
        # …and by kind of trial: a probe's epoch (0.01 s) said little about a full fine-tune's (3 s).
        self._kind_seconds: OrderedDict[tuple, deque[float]] = OrderedDict()
        self._gpu_trials = _Runner("tlcore-gpu-trials")
        self._thread = threading.Thread(target=self._work, name="tlcore-jobs", daemon=True)
        self._thread.start()
        # A daemon thread still inside a torch kernel at interpreter exit aborts the process:
        # stop the running trial at its next batch and let the worker return first.
        atexit.register(self.shutdown)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop what runs at its next batch; it and every queued run are marked interrupted
        (not cancelled: nobody asked for that), and finished runs stay as they are."""
        with self._lock:
            self._closing = True
            for job in self._queue:
                self.store.set_status(job.run_id, "interrupted")
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        self._thread.join(timeout)

    def submit(self, config: TrialConfig, dataset: Dataset, *, dataset_label: str,
               model: torch.nn.Module | None = None, tags: dict | None = None) -> int:
        """Queue a trial (``model`` is copied by the trial, never trained in place). ``tags``
        (e.g. a sweep id) are kept with the config."""
        return self.submit_many([Submission(config, dataset, dataset_label, model, tags or {})])[0]

    def submit_many(self, items: list[Submission]) -> list[int]:
        """Queue every trial or none: each config is checked (a bad setting, a demo-mode cap)
        and the room for all of them is checked at once, so a sweep or a validation is never
        left half queued. Raises ValueError (QueueFullError) with the reason."""
        for item in items:
            item.config.check()
        with self._lock:
            self._check_room(len(items))
            self._check_share(items)
            ids = self.store.create_many([  # one transaction: a failed write queues nothing
                {"model": item.config.model, "dataset": item.dataset_label,
                 "config": dict(item.config.__dict__, augment=list(item.config.augment), tags=item.tags)}
                for item in items])
            self._queue += [_Job(run_id, item.config, item.dataset, item.model, item.owner)
                            for run_id, item in zip(ids, items, strict=True)]
            self._lock.notify()
        return ids

    def room(self) -> int:
        """How many more trials may wait in the queue now."""
        with self._lock:
            return max(0, limits().max_waiting_jobs - len(self._queue))

    def _check_room(self, n: int) -> None:
        free = limits().max_waiting_jobs - len(self._queue)
        if n > free:
            what = "a trial" if n == 1 else f"{n} trials, queued together or not at all,"
            raise QueueFullError(f"the queue has room for {max(0, free)} more trial(s) ({len(self._queue)} waiting, "
                                 f"limit {limits().max_waiting_jobs}): {what} must wait until some have finished")

    def _check_share(self, items: list[Submission]) -> None:
        cap = limits().max_waiting_per_session
        for owner in {item.owner for item in items} - {""}:
            waiting = sum(j.owner == owner for j in self._queue)
            adding = sum(i.owner == owner for i in items)
            if waiting + adding > cap:
                raise QueueFullError(f"at most {cap} of your trials may wait at once here, so that others get "
                                     f"their turn ({waiting} waiting, {adding} more asked): queue more when some "
                                     "have finished")

    def _order(self) -> list[_Job]:
        """The queue in the order the worker will take it: owners in turn, least recently served first,
        each owner's trials in the order they were queued."""
        served = dict(self._served)
        per_owner: dict[str, deque[_Job]] = {}
        for job in self._queue:
            per_owner.setdefault(job.owner, deque()).append(job)
        out = []
        while per_owner:
            owner = min(per_owner, key=lambda o: served.get(o, 0))  # ties: the earliest queued owner
            out.append(per_owner[owner].popleft())
            served[owner] = max(served.values(), default=0) + 1
            if not per_owner[owner]:
                del per_owner[owner]
        return out

    def cancel(self, run_id: int) -> None:
        with self._lock:
            for job in self._queue:
                if job.run_id == run_id:
                    self._queue.remove(job)
                    self.store.set_status(run_id, "cancelled")
                    return
            if self._running and self._running.run_id == run_id:
                self._running.cancel.set()

    def active(self, owner: str) -> list[int]:
        """The runs ``owner`` has queued or running."""
        with self._lock:
            jobs = [*self._queue, *([self._running] if self._running else [])]
            return [job.run_id for job in jobs if job.owner == owner]

    def position(self, run_id: int) -> int | None:
        """0 while running, k when k trials run before it, None when it is not waiting."""
        with self._lock:
            if self._running and self._running.run_id == run_id:
                return 0
            ids = [j.run_id for j in self._order()]
            return ids.index(run_id) + 1 if run_id in ids else None

    def wait_estimate(self, run_id: int) -> float | None:
        """Seconds until ``run_id`` starts: each trial ahead's epochs left × the recent epochs of its
        kind (``_kind``), or of any kind where its own has not run yet (None: nothing timed yet, or
        not waiting)."""
        with self._lock:
            ahead = self._order()
            ids = [j.run_id for j in ahead]
            if run_id not in ids or not self._epoch_seconds:
                return None
            jobs = ahead[:ids.index(run_id)] + ([self._running] if self._running else [])
            return max(0.0, sum((j.config.epochs - j.epochs_done) * self._per_epoch(j) for j in jobs))

    def _per_epoch(self, job: _Job) -> float:
        return statistics.median(self._kind_seconds.get(_kind(job), self._epoch_seconds))

    def busy(self) -> bool:
        with self._lock:
            return self._running is not None or bool(self._queue)

    def wait(self, timeout: float = 600.0) -> bool:
        """Block until the queue is empty (tests, the CLI); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._running is None and not self._queue, timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._queue) or self._closing)
                if self._closing:
                    return
                job = self._running = self._order()[0]
                self._queue.remove(job)
                self._served[job.owner] = next(self._turn)
                self._forget_served()
            try:
                self._run_on_a_thread_of_its_own(job)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()

    def _run_on_a_thread_of_its_own(self, job: _Job) -> None:
        """A CPU trial runs on a thread that ends with it. A live thread that has run torch keeps an
        OpenMP team, and while it lived every other thread's CPU work ran 2.2× slower (a page's
        Lite0 features after one trial, 2-core VM: 14 → 31 ms per image, back to 13 once the
        thread ended), so the worker itself never runs torch. GPU trials share one long-lived
        thread instead: cuDNN keeps its execution plans per thread (PyTorch's Conv_v8.cpp), so a
        new thread would make them again for every convolution and batch shape of every trial,
        and a GPU trial's own CPU work is small."""
        def run() -> None:
            with paths.private_space(job.space):
                self._run(job)

        if job.model_device().type == "cuda":
            self._gpu_trials.run(run)
            return
        runner = threading.Thread(target=run, name=f"tlcore-trial-{job.run_id}", daemon=True)
        runner.start()
        runner.join()

    def _forget_served(self) -> None:
        """Keep the turn book small on a long-lived server: an owner with nothing queued whose last
        turn is older than every waiting served owner's would come first anyway, like one never
        served, so it is forgotten (only the newest turn is kept when no served owner waits)."""
        waiting = {j.owner for j in self._queue}
        floor = min((t for o, t in self._served.items() if o in waiting), default=max(self._served.values()))
        self._served = {o: t for o, t in self._served.items() if o in waiting or t >= floor}

    def _epoch_done(self, job: _Job, stats) -> None:
        self.store.append_epoch(job.run_id, stats.__dict__)
        with self._lock:
            self._epoch_seconds.append(stats.seconds)
            kind = _kind(job)
            self._kind_seconds.setdefault(kind, deque(maxlen=10)).append(stats.seconds)
            self._kind_seconds.move_to_end(kind)
            while len(self._kind_seconds) > 64:  # a long-lived server sees many kinds
                self._kind_seconds.popitem(last=False)
            job.epochs_done += 1

    def _run(self, job: _Job) -> None:
        self.store.set_status(job.run_id, "running")
        cap = limits().max_trial_seconds
        deadline = time.monotonic() + cap if cap is not None else float("inf")
        try:
            with working(job.model_device()):
                result = self._trial(job.config, job.dataset, model=job.model, keep_weights=True,
                                     on_epoch=lambda s: self._epoch_done(job, s),
                                     should_stop=lambda: job.cancel.is_set() or time.monotonic() > deadline)
        except TrialCancelled:
            timed_out = not job.cancel.is_set() and time.monotonic() > deadline
            self.store.set_status(job.run_id, "interrupted" if self._closing else "cancelled",
                                  error=f"stopped at this server's cap of {cap / 60:.0f} min per trial after "
                                        f"{job.epochs_done} epoch(s); the curve so far is kept" if timed_out else None)
            return
        except Exception as err:  # a failed trial must not kill the worker
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            self.store.set_status(job.run_id, "failed", error=last)
            return
        if result.state_dict is not None:
            self.store.save_weights(job.run_id, result.state_dict)
        self.store.finish(job.run_id, dict(result.to_json(), run_id=job.run_id))
