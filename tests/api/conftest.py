"""Fixtures for the API tests: the app in local mode (SQLite store, static tokens) on a clock the test moves."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from autoscaler.api import AutoscalerState, MemoryStatusSource, create_app
from autoscaler.api.auth import StaticTokenAuth
from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore

OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789ab"
START = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc).timestamp()


@dataclass
class FakeClock:
    """The injected clock: time moves only when the test says so."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LocalApi:
    client: TestClient
    store: SqliteOverrideStore
    audit: SqliteAuditLog
    status: MemoryStatusSource
    clock: FakeClock
    headers: dict = field(default_factory=dict)

    def as_operator(self) -> dict:
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    def as_viewer(self) -> dict:
        return {"Authorization": f"Bearer {VIEWER_TOKEN}"}


def llama_state(**changes) -> AutoscalerState:
    values = dict(namespace="default", name="llama", model="llama-8b", current=3, desired=3, ready=3, loading=0,
                  min_replicas=1, max_replicas=10)
    values.update(changes)
    return AutoscalerState(**values)


@pytest.fixture
def local_api(tmp_path) -> LocalApi:
    db = tmp_path / "warmscale.db"
    store, audit = SqliteOverrideStore(db), SqliteAuditLog(db)
    status = MemoryStatusSource()
    status.update(llama_state())
    clock = FakeClock()
    auth = StaticTokenAuth({OPERATOR_TOKEN: ("alice", "operator"), VIEWER_TOKEN: ("bob", "viewer")})
    app = create_app(store, audit, status, auth, clock=clock)
    with TestClient(app) as client:
        yield LocalApi(client, store, audit, status, clock)
