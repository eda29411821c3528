"""Run history in SQLite: every trial is written as it progresses, so a refresh, a page switch
or a server restart never loses a finished run, and an unfinished one is marked interrupted.

Each run records the process that owns it (host, process id, the process's start time). Only a
run whose owner is gone is marked interrupted: `tlcore runs` beside a training app, or two app
processes on one store, leave each other's live trials alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pickle
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import torch

from tlcore import paths

STATUSES = ("queued", "running", "done", "cancelled", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    config TEXT NOT NULL,
    history TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    error TEXT
)"""
_OWNER_COLUMNS = ("owner_host TEXT", "owner_pid INTEGER", "owner_started TEXT")

Owner = tuple[str, int, "str | None"]  # (host, process id, start time in clock ticks since boot)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (Linux: /proc), so a reused process id is not taken for it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]  # field 22, starttime; the fields after "(comm)" begin at field 3


def this_process() -> Owner:
    return socket.gethostname(), os.getpid(), _start_time(os.getpid())


# Another host's run that has not written anything for this long is taken for gone: a container
# recreated under a new hostname must not leave its runs "running" for ever. Epochs write far
# more often than this.
SILENT_HOURS = 12


def owner_alive(host: str | None, pid: int | None, started: str | None, updated: str | None = None) -> bool:
    """False when we can tell the owner is gone: no owner recorded (an old row), a process of
    this host that no longer exists (or whose id now belongs to a newer process), or another
    host's run silent for SILENT_HOURS. Otherwise another host's runs are left alone."""
    if pid is None:
        return False
    if host != socket.gethostname():
        if updated is None:
            return True
        silent = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(updated)
        return silent < dt.timedelta(hours=SILENT_HOURS)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return started is None or _start_time(pid) in (None, started)


class MissingWeightsError(ValueError):
    """A run's trained weights are not on disk, or not readable."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _set_aside(path: Path, weights: Path) -> Path:
    """Move an unreadable SQLite file, its journal files and its runs' weights folder to dated names
    beside them (a new history numbers its runs from 1 again: its weights must not meet the old
    ones); returns the file's new name. Another process may have moved them first: then there is
    nothing left to move."""
    aside = Path(f"{path}.unreadable-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    # The journals keep SQLite's naming (<file>-wal), so the copy opens with them.
    for old, new in ((path, aside), (f"{path}-wal", f"{aside}-wal"), (f"{path}-shm", f"{aside}-shm"),
                     (weights, f"{weights}{aside.name.removeprefix(path.name)}")):
        with contextlib.suppress(FileNotFoundError):
            os.replace(old, new)
    return aside


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """One process at a time opens (and, if need be, sets aside) the history: without it a second
    process could move aside the healthy file a first one had just made."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; opening races there are left as they were
        yield
        return
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class RunStore:
    """One SQLite file (default ``$TLCORE_HOME/runs.sqlite``); safe from several threads."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else paths.cache_file("runs.sqlite")
        # Where a history that SQLite could not read was moved when this store opened (kept for the
        # user, never deleted); None when it opened as it was.
        self.set_aside: Path | None = None
        with _opening(self.path):
            try:
                self._prepare()
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.OperationalError):  # locked, read-only, disk full: not damage
                    raise
                self.set_aside = _set_aside(self.path, self.weights_path(0).parent)  # not a database, malformed
                self._prepare()

    def _prepare(self) -> None:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            for column in _OWNER_COLUMNS:  # a store written before runs had owners
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column}")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits (or rolls back) and is closed on leaving the block."""
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def create(self, *, model: str, dataset: str, config: dict, status: str = "queued",
               owner: Owner | None = None) -> int:
        """A new run owned by ``owner`` (default: this process)."""
        return self.create_many([{"model": model, "dataset": dataset, "config": config}], status=status,
                                owner=owner)[0]

    def create_many(self, runs: list[dict], *, status: str = "queued", owner: Owner | None = None) -> list[int]:
        """Several runs (dicts of model, dataset, config) in one transaction: all are written or none."""
        host, pid, started = owner or this_process()
        with self._connect() as db:
            return [int(db.execute(
                "INSERT INTO runs (created, updated, status, model, dataset, config, owner_host, owner_pid, "
                "owner_started) VALUES (?,?,?,?,?,?,?,?,?)",
                (_now(), _now(), status, r["model"], r["dataset"], json.dumps(r["config"]), host, pid, started)
            ).lastrowid) for r in runs]

    def set_status(self, run_id: int, status: str, *, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, error=COALESCE(?, error), updated=? WHERE id=?",
                       (status, error, _now(), run_id))

    def append_epoch(self, run_id: int, epoch: dict) -> None:
        with self._connect() as db:
            row = db.execute("SELECT history FROM runs WHERE id=?", (run_id,)).fetchone()
            history = json.loads(row["history"]) + [epoch]
            db.execute("UPDATE runs SET history=?, updated=? WHERE id=?", (json.dumps(history), _now(), run_id))

    def finish(self, run_id: int, result: dict) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status='done', result=?, history=?, updated=? WHERE id=?",
                       (json.dumps(result), json.dumps(result.get("history", [])), _now(), run_id))

    def get(self, run_id: int) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id}")
        return _decode(row)

    def list(self, *, session: str | None = None) -> list[dict]:
        """Every run, oldest first; with ``session``, only the runs tagged with that session (a
        shared demo's per-visitor history, filtered here so other visitors' runs are not decoded)."""
        query, args = "SELECT * FROM runs ORDER BY id", ()
        if session is not None:
            query, args = "SELECT * FROM runs WHERE json_extract(config, '$.tags.session') = ? ORDER BY id", (session,)
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [_decode(r) for r in rows]

    def weights_path(self, run_id: int) -> Path:
        """Where a run's trained weights (a state_dict) are kept, beside the history file."""
        return self.path.parent / "runs" / f"run-{run_id}.pt"

    def save_weights(self, run_id: int, state: dict) -> None:
        path = self.weights_path(run_id)
        path.parent.mkdir(exist_ok=True)
        paths.write_atomically(path, lambda f: torch.save(state, f))

    def load_weights(self, run_id: int) -> dict:
        """The run's state_dict (``weights_only``: never unpickles code); MissingWeightsError when
        none was kept or the file cannot be read."""
        path = self.weights_path(run_id)
        if not path.exists():
            raise MissingWeightsError(f"run {run_id} kept no weights (runs from before weights were kept, or "
                                      "the file was removed); run the trial again")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise MissingWeightsError(f"run {run_id}'s weights cannot be read ({err})") from None

    def delete(self, run_ids: list[int]) -> int:
        """Remove finished runs and their weights (a shared demo forgets a visitor who has gone);
        queued and running runs are left alone. Returns how many went."""
        marks = ",".join("?" * len(run_ids))
        with self._connect() as db:
            gone = [r["id"] for r in db.execute(
                f"SELECT id FROM runs WHERE id IN ({marks}) AND status NOT IN ('queued', 'running')",
                run_ids).fetchall()]
            db.executemany("DELETE FROM runs WHERE id=?", [(i,) for i in gone])
        for run_id in gone:
            self.weights_path(run_id).unlink(missing_ok=True)
        return len(gone)

    def mark_interrupted(self) -> int:
        """Runs left queued or running by a process that is gone become interrupted; live
        processes' runs (another app, a CLI trial) are left alone. Returns how many changed."""
        with self._connect() as db:
            rows = db.execute("SELECT id, updated, owner_host, owner_pid, owner_started FROM runs "
                              "WHERE status IN ('queued', 'running')").fetchall()
            gone = [(_now(), r["id"]) for r in rows
                    if not owner_alive(r["owner_host"], r["owner_pid"], r["owner_started"], r["updated"])]
            db.executemany("UPDATE runs SET status='interrupted', updated=? WHERE id=?", gone)
            return len(gone)


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["config"] = json.loads(out["config"])
    out["history"] = json.loads(out["history"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out
