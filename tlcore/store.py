"""Run history in SQLite: every trial is written as it progresses, so a refresh, a page switch
or a server restart never loses a finished run, and an unfinished one is marked interrupted."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunStore:
    """One SQLite file (default ``$TLCORE_HOME/runs.sqlite``); safe from several threads."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else paths.cache_file("runs.sqlite")
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def create(self, *, model: str, dataset: str, config: dict, status: str = "queued") -> int:
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (created, updated, status, model, dataset, config) VALUES (?,?,?,?,?,?)",
                (_now(), _now(), status, model, dataset, json.dumps(config)))
            return int(cur.lastrowid)

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

    def list(self) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [_decode(r) for r in rows]

    def weights_path(self, run_id: int) -> Path:
        """Where a run's trained weights (a state_dict) are kept, beside the history file."""
        return self.path.parent / "runs" / f"run-{run_id}.pt"

    def save_weights(self, run_id: int, state: dict) -> None:
        path = self.weights_path(run_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def load_weights(self, run_id: int) -> dict:
        """The run's state_dict (``weights_only``: never unpickles code); KeyError when none was kept."""
        path = self.weights_path(run_id)
        if not path.exists():
            raise KeyError(f"run {run_id} kept no weights")
        return torch.load(path, map_location="cpu", weights_only=True)

    def mark_interrupted(self) -> int:
        """At start-up: runs left queued or running by a previous process are interrupted."""
        with self._connect() as db:
            cur = db.execute("UPDATE runs SET status='interrupted', updated=? WHERE status IN "
                             "('queued', 'running')", (_now(),))
            return cur.rowcount


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["config"] = json.loads(out["config"])
    out["history"] = json.loads(out["history"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out
