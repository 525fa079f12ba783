"""What `warmscale local` keeps across its own restarts, in one SQLite file (state_dir/local.db).

- engines: every engine it started (pid, port, devices, log) until it is stopped; a restart adopts
  the ones still alive and healthy instead of starting them again.
- decisions: every decision with its reason and explain numbers (the API's decision history).
- policy snapshots: each model's policy state (`snapshot()` / `restore()`), so windows survive.
- counters: restarts per model. events: engine starts, drains, stops, crashes.
Overrides and their audit trail live in the API's own SQLite store (state_dir/overrides.db).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from autoscaler.contract import Decision, DecisionExplain, Reason

__all__ = ["LocalState", "EngineRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS engines (id TEXT PRIMARY KEY, model TEXT NOT NULL, pid INTEGER NOT NULL,
  port INTEGER NOT NULL, devices TEXT NOT NULL, log_path TEXT NOT NULL, started_at REAL NOT NULL,
  ready_at REAL);
CREATE TABLE IF NOT EXISTS decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, time REAL NOT NULL,
  current INTEGER NOT NULL, desired INTEGER NOT NULL, reason TEXT NOT NULL, signal TEXT NOT NULL,
  detail TEXT NOT NULL, explain TEXT);
CREATE INDEX IF NOT EXISTS decisions_model ON decisions (model, id);
CREATE TABLE IF NOT EXISTS snapshots (model TEXT PRIMARY KEY, policy TEXT NOT NULL, body TEXT NOT NULL,
  time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS forecast_history (model TEXT PRIMARY KEY, body TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (model TEXT PRIMARY KEY, restarts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, model TEXT NOT NULL,
  kind TEXT NOT NULL, engine TEXT NOT NULL, data TEXT NOT NULL);
"""


class EngineRecord(tuple):
    """(id, model, pid, port, devices, log_path, started_at, ready_at)"""

    __slots__ = ()
    id = property(lambda s: s[0])
    model = property(lambda s: s[1])
    pid = property(lambda s: s[2])
    port = property(lambda s: s[3])
    devices = property(lambda s: tuple(json.loads(s[4])))
    log_path = property(lambda s: Path(s[5]))
    started_at = property(lambda s: s[6])
    ready_at = property(lambda s: s[7])


class LocalState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ engines
    def engine_started(self, engine_id: str, model: str, pid: int, port: int, devices: tuple[str, ...],
                       log_path: Path, started_at: float) -> None:
        self._run("INSERT OR REPLACE INTO engines VALUES (?,?,?,?,?,?,?,NULL)",
                  (engine_id, model, pid, port, json.dumps(list(devices)), str(log_path), started_at))

    def engine_ready(self, engine_id: str, ready_at: float) -> None:
        self._run("UPDATE engines SET ready_at=? WHERE id=?", (ready_at, engine_id))

    def engine_gone(self, engine_id: str) -> None:
        self._run("DELETE FROM engines WHERE id=?", (engine_id,))

    def engines(self, model: str | None = None) -> list[EngineRecord]:
        rows = (self._run("SELECT * FROM engines WHERE model=?", (model,)) if model
                else self._run("SELECT * FROM engines"))
        return [EngineRecord(r) for r in rows]

    # ------------------------------------------------------------------ decisions
    def record_decision(self, d: Decision) -> None:
        explain = json.dumps(d.explain.to_dict()) if d.explain is not None else None
        self._run("INSERT INTO decisions (model, time, current, desired, reason, signal, detail, explain) "
                  "VALUES (?,?,?,?,?,?,?,?)",
                  (d.model, d.time, d.current, d.desired, str(d.reason), str(d.signal), d.detail, explain))

    def decisions(self, model: str, limit: int = 100) -> list[Decision]:
        """Newest first."""
        rows = self._run("SELECT model, time, current, desired, reason, signal, detail, explain FROM decisions "
                         "WHERE model=? ORDER BY id DESC LIMIT ?", (model, limit))
        return [_decision(r) for r in rows]

    def decision_count(self, model: str) -> int:
        return self._run("SELECT COUNT(*) FROM decisions WHERE model=?", (model,))[0][0]

    # ------------------------------------------------------------------ policy snapshots, counters, events
    def save_snapshot(self, model: str, policy: str, body: dict, time: float) -> None:
        self._run("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)", (model, policy, json.dumps(body), time))

    def snapshot(self, model: str, policy: str) -> dict | None:
        rows = self._run("SELECT body FROM snapshots WHERE model=? AND policy=?", (model, policy))
        return json.loads(rows[0][0]) if rows else None

    def save_forecast_history(self, model: str, body: dict, time: float) -> None:
        self._run("INSERT OR REPLACE INTO forecast_history VALUES (?,?,?)", (model, json.dumps(body), time))

    def forecast_history(self, model: str) -> dict | None:
        rows = self._run("SELECT body FROM forecast_history WHERE model=?", (model,))
        return json.loads(rows[0][0]) if rows else None

    def set_restarts(self, model: str, restarts: int) -> None:
        self._run("INSERT OR REPLACE INTO counters VALUES (?,?)", (model, restarts))

    def restarts(self, model: str) -> int:
        rows = self._run("SELECT restarts FROM counters WHERE model=?", (model,))
        return rows[0][0] if rows else 0

    def event(self, time: float, model: str, kind: str, engine: str, data: dict) -> None:
        self._run("INSERT INTO events (time, model, kind, engine, data) VALUES (?,?,?,?,?)",
                  (time, model, kind, engine, json.dumps(data)))

    def events(self, model: str | None = None, kind: str | None = None) -> list[dict]:
        rows = self._run("SELECT time, model, kind, engine, data FROM events ORDER BY id")
        return [{"time": t, "model": m, "kind": k, "engine": e, **json.loads(d)} for t, m, k, e, d in rows
                if (model is None or m == model) and (kind is None or k == kind)]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _decision(row: tuple) -> Decision:
    model, time, current, desired, reason, signal, detail, explain = row
    ex = None
    if explain:
        e = json.loads(explain)
        ex = DecisionExplain(need=e["need"], raw_desired=e["raw_desired"], lead_s=e["lead_s"], panic=e["panic"],
                             headroom=e["headroom"], limits=tuple(e["limits"]), override=e["override"],
                             missing=tuple(e["missing"]), stale=e["stale"])
    try:
        reason = Reason(reason)
    except ValueError:
        pass
    return Decision(model, time, current, desired, reason, signal, detail, explain=ex)
