"""Overrides and their audit trail in one SQLite file (single-machine mode)."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from autoscaler.overrides.errors import Conflict, FieldError, NotFound, Unavailable
from autoscaler.overrides.model import AuditEntry, ScalingOverride
from autoscaler.overrides.store import ActiveSpecsMixin

__all__ = ["SqliteOverrideStore", "SqliteAuditLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overrides (
  namespace TEXT NOT NULL, name TEXT NOT NULL, target TEXT NOT NULL, uid TEXT NOT NULL,
  body TEXT NOT NULL, idempotency_key TEXT, body_hash TEXT,
  PRIMARY KEY (namespace, name));
CREATE UNIQUE INDEX IF NOT EXISTS overrides_idempotency ON overrides (namespace, idempotency_key);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, target TEXT NOT NULL,
  override TEXT NOT NULL, body TEXT NOT NULL);
"""


class _Db:
    """One connection guarded by a lock; every call is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise Unavailable(f"cannot open the override database {self.path}: {err}") from None

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                raise
            except sqlite3.OperationalError as err:
                raise Unavailable(f"override database {self.path}: {err}") from None

    def version(self) -> tuple[int, int] | None:
        """Changes whenever the data may have: this connection's own changes (total_changes) and any
        other connection's commits (PRAGMA data_version). None, rather than wait, while the connection
        is busy: the caller reads the data then (it is asked from the API's event loop)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._conn.total_changes, self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_SHARED: dict[str, _Db] = {}
_SHARED_LOCK = threading.Lock()


def _db(path: str | Path) -> _Db:
    key = str(Path(path).resolve()) if str(path) != ":memory:" else f":memory:{id(path)}"
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = _Db(path)
        return _SHARED[key]


class SqliteOverrideStore(ActiveSpecsMixin):
    def __init__(self, path: str | Path) -> None:
        self._db = _db(path)

    def version(self) -> tuple[int, int] | None:
        """A token that changes whenever the overrides may have (see OverrideStore.version)."""
        return self._db.version()

    def list(self, namespace: str | None = None, target: str | None = None) -> list[ScalingOverride]:
        sql, args = "SELECT body FROM overrides WHERE 1=1", []
        if namespace is not None:
            sql, args = sql + " AND namespace = ?", [*args, namespace]
        if target is not None:
            sql, args = sql + " AND target = ?", [*args, target]
        with self._db.tx() as conn:
            rows = conn.execute(sql + " ORDER BY namespace, name", args).fetchall()
        return [ScalingOverride.model_validate_json(body) for (body,) in rows]

    def get(self, namespace: str, name: str) -> ScalingOverride:
        with self._db.tx() as conn:
            row = conn.execute("SELECT body FROM overrides WHERE namespace = ? AND name = ?",
                               (namespace, name)).fetchone()
        if row is None:
            raise NotFound(f"override {namespace}/{name} does not exist", "name", name)
        return ScalingOverride.model_validate_json(row[0])

    def create(self, override: ScalingOverride, idempotency_key: str | None = None,
               body_hash: str | None = None) -> ScalingOverride:
        stored = override.model_copy(update={"uid": uuid.uuid4().hex})
        try:
            with self._db.tx() as conn:
                conn.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (stored.namespace, stored.name, stored.target, stored.uid,
                              stored.model_dump_json(), idempotency_key, body_hash))
        except sqlite3.IntegrityError:
            raise Conflict(f"override {override.namespace}/{override.name} already exists", "name",
                           override.name) from None
        return stored

    def find_idempotent(self, namespace: str, idempotency_key: str,
                        fresh: bool = False) -> tuple[ScalingOverride, str] | None:
        with self._db.tx() as conn:
            row = conn.execute("SELECT body, body_hash FROM overrides WHERE namespace = ? AND idempotency_key = ?",
                               (namespace, idempotency_key)).fetchone()
        return None if row is None else (ScalingOverride.model_validate_json(row[0]), row[1])

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        sql, args = "DELETE FROM overrides WHERE namespace = ? AND name = ?", [namespace, name]
        if uid:
            sql, args = sql + " AND uid = ?", [*args, uid]
        with self._db.tx() as conn:
            deleted = conn.execute(sql, args).rowcount
        if not deleted:
            raise NotFound(f"override {namespace}/{name} does not exist", "name", name)


class SqliteAuditLog:
    def __init__(self, path: str | Path) -> None:
        self._db = _db(path)

    def record(self, entry: AuditEntry) -> AuditEntry:
        with self._db.tx() as conn:
            cursor = conn.execute("INSERT INTO audit (namespace, target, override, body) VALUES (?, ?, ?, ?)",
                                  (entry.namespace, entry.target, entry.override, entry.model_dump_json()))
        return entry.model_copy(update={"id": str(cursor.lastrowid)})

    def remove(self, entry_id: str) -> None:
        with self._db.tx() as conn:
            conn.execute("DELETE FROM audit WHERE id = ?", (int(entry_id),))

    def query(self, namespace: str | None = None, target: str | None = None, override: str | None = None,
              limit: int = 100, continue_token: str | None = None) -> tuple[list[AuditEntry], str | None]:
        sql, args = "SELECT id, body FROM audit WHERE 1=1", []
        for column, value in (("namespace", namespace), ("target", target), ("override", override)):
            if value is not None:
                sql, args = sql + f" AND {column} = ?", [*args, value]
        if continue_token is not None:
            if not continue_token.isdigit():
                raise FieldError(f"continue token {continue_token!r} was not issued by this server",
                                 "continue", continue_token)
            sql, args = sql + " AND id < ?", [*args, int(continue_token)]
        with self._db.tx() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit + 1]).fetchall()
        entries = [AuditEntry.model_validate_json(body).model_copy(update={"id": str(i)}) for i, body in rows[:limit]]
        token = entries[-1].id if len(rows) > limit else None
        return entries, token
