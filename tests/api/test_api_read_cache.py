"""Reads of overrides are answered from encoded responses kept per store version: they follow every
write (this process's and another connection's), change state on time (expiry, schedule windows),
and still check every caller's token and rights."""
from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient

from autoscaler.api import MemoryStatusSource, create_app
from autoscaler.api.auth import StaticTokenAuth, User
from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
from autoscaler.overrides.model import ScalingOverride, utc
from autoscaler.overrides.resolve import active_until
from tests.api.conftest import OPERATOR_TOKEN, VIEWER_TOKEN, FakeClock, llama_state

OVERRIDES = "/v1/namespaces/default/overrides"
PIN = {"target": "llama", "kind": "pin", "replicas": 4, "duration": "10m", "reason": "launch"}


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [o["name"] for o in response.json()["items"]]


def test_cached_list_follows_writes_of_another_connection(local_api, tmp_path):
    c, h = local_api.client, local_api.as_operator()
    first = c.post(OVERRIDES, json={**PIN, "name": "first"}, headers=h).json()["override"]
    assert names(c.get("/v1/overrides", headers=h)) == ["first"]
    assert names(c.get("/v1/overrides", headers=h)) == ["first"]          # answered from the cache
    # another process writes the same file (a second local instance, a repair by hand)
    other = ScalingOverride.model_validate({**first, "name": "second", "uid": uuid.uuid4().hex})
    with sqlite3.connect(tmp_path / "warmscale.db") as conn:
        conn.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                     (other.namespace, other.name, other.target, other.uid, other.model_dump_json()))
    assert names(c.get("/v1/overrides", headers=h)) == ["first", "second"]
    assert c.get(f"{OVERRIDES}/second", headers=h).json()["uid"] == other.uid
    with sqlite3.connect(tmp_path / "warmscale.db") as conn:
        conn.execute("DELETE FROM overrides WHERE name = 'second'")
    assert names(c.get("/v1/overrides", headers=h)) == ["first"]
    assert c.get(f"{OVERRIDES}/second", headers=h).status_code == 404
    # and this process's own writes
    assert c.delete(f"{OVERRIDES}/first", headers=h).status_code == 200
    assert names(c.get("/v1/overrides", headers=h)) == []
    assert c.get(f"{OVERRIDES}/first", headers=h).status_code == 404


def test_cached_reads_change_state_at_expiry(local_api):
    c, h = local_api.client, local_api.as_operator()
    created = c.post(OVERRIDES, json={**PIN, "name": "short"}, headers=h).json()["override"]
    assert c.get(f"{OVERRIDES}/short", headers=h).json()["active"] is True
    local_api.clock.advance(599)
    assert c.get(f"{OVERRIDES}/short", headers=h).json()["active"] is True
    assert c.get("/v1/overrides", params={"active": "true"}, headers=h).json()["items"][0]["name"] == "short"
    local_api.clock.advance(1)          # now at expires_at: no longer in force, with no write in between
    got = c.get(f"{OVERRIDES}/short", headers=h).json()
    assert (got["active"], got["active_until"], got["expires_at"]) == (False, None, created["expires_at"])
    assert c.get("/v1/overrides", params={"active": "true"}, headers=h).json()["items"] == []
    local_api.clock.advance(-1)         # a clock set back is read again, not answered from a later entry
    assert c.get(f"{OVERRIDES}/short", headers=h).json()["active"] is True


def test_cached_reads_follow_schedule_windows(local_api):
    c, h = local_api.client, local_api.as_operator()
    body = {"name": "office", "target": "llama", "kind": "prewarm", "replicas": 3, "duration": "3h",
            "reason": "every 3 minutes for 1 minute", "schedule": {"cron": "*/3 * * * *", "duration": "1m"}}
    assert c.post(OVERRIDES, json=body, headers=h).status_code == 201
    stored = local_api.store.get("default", "office")
    seen = set()
    for _ in range(80):               # steps shorter than an entry's longest life, out of step with the windows
        local_api.clock.advance(7)
        until = active_until(stored, utc(local_api.clock()))
        want = (until is not None, until.isoformat().replace("+00:00", "Z") if until else None)
        one = c.get(f"{OVERRIDES}/office", headers=h).json()
        listed = c.get("/v1/overrides", headers=h).json()["items"][0]
        for got in (one, listed):
            assert (got["active"], got["active_until"]) == want, (local_api.clock(), got)
        seen.add(want[0])
    assert seen == {True, False}


class CountingStore(SqliteOverrideStore):
    def __init__(self, path) -> None:
        super().__init__(path)
        self.reads = 0

    def list(self, namespace=None, target=None):
        self.reads += 1
        return super().list(namespace, target)


class NamespacedAuth(StaticTokenAuth):
    """Static tokens, but 'carol' may read only namespace 'default'."""

    def authorize(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        if user.name == "carol" and namespace != "default":
            return False
        return super().authorize(user, verb, resource, namespace)

    peek_authorize = authorize


def test_a_cached_read_skips_the_store_but_checks_every_caller(tmp_path):
    carol = "carol-token-0123456789abcdef"
    db = tmp_path / "w.db"
    store = CountingStore(db)
    status = MemoryStatusSource()
    status.update(llama_state())
    auth = NamespacedAuth({OPERATOR_TOKEN: ("alice", "operator"), VIEWER_TOKEN: ("bob", "viewer"),
                           carol: ("carol", "viewer")})
    app = create_app(store, SqliteAuditLog(db), status, auth, clock=FakeClock())
    with TestClient(app) as c:
        assert c.post(OVERRIDES, json=PIN, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 201
        reads = store.reads
        for token in (OPERATOR_TOKEN, VIEWER_TOKEN, OPERATOR_TOKEN):
            assert len(c.get("/v1/overrides", headers={"Authorization": f"Bearer {token}"}).json()["items"]) == 1
        assert store.reads == reads + 1
        assert c.get("/v1/overrides").status_code == 401
        assert c.get("/v1/overrides", headers={"Authorization": "Bearer not-a-token-at-all"}).status_code == 401
        assert c.get("/v1/overrides", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"}).status_code == 401
        # carol may read default, not every namespace: the cached list of all namespaces is not hers
        assert c.get("/v1/overrides", headers={"Authorization": f"Bearer {carol}"}).status_code == 403
        assert c.get("/v1/overrides", params={"namespace": "default"},
                     headers={"Authorization": f"Bearer {carol}"}).status_code == 200
        # a bad query is validated, never answered from a cache
        assert c.get("/v1/overrides?limit=0", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 422


class BlockingOnlyAuth:
    """An Auth with no peek methods (each answer may block): asked on a worker thread every time."""

    def __init__(self) -> None:
        self.calls = 0

    def authenticate(self, token: str) -> User | None:
        self.calls += 1
        return User("dave", groups=("warmscale:operator",)) if token == OPERATOR_TOKEN else None

    def authorize(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        return True


def test_an_auth_without_peek_is_asked_on_every_request(tmp_path):
    db = tmp_path / "w.db"
    status = MemoryStatusSource()
    status.update(llama_state())
    auth = BlockingOnlyAuth()
    app = create_app(SqliteOverrideStore(db), SqliteAuditLog(db), status, auth, clock=FakeClock())
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        assert c.post(OVERRIDES, json=PIN, headers=h).status_code == 201
        calls = auth.calls
        for _ in range(3):
            assert len(c.get("/v1/overrides", headers=h).json()["items"]) == 1
        assert auth.calls == calls + 3
        assert c.get("/v1/overrides", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_response_cache_is_bounded(local_api):
    c, h = local_api.client, local_api.as_operator()
    for limit in range(1, 700):
        assert c.get("/v1/overrides", params={"limit": limit}, headers=h).status_code == 200
    cache = next(m for m in local_api.client.app.user_middleware if m.cls.__name__ == "_CachedReads").kwargs["cache"]
    assert 0 < len(cache._data) <= cache.size
    assert cache.bytes == sum(len(entry[3]) for entry in cache._data.values())
    cache.max_bytes = 8 * len(next(iter(cache._data.values()))[3])      # now room for eight (none larger than 1/8)
    for limit in range(1, 20):
        assert c.get("/v1/overrides", params={"limit": limit}, headers=h).status_code == 200
    assert 0 < cache.bytes <= cache.max_bytes and len(cache._data) == 8


def test_expired_window_bound_never_reaches_past_expiry(local_api):
    """A scheduled override whose window outlasts its expiry is shown inactive from the expiry on."""
    c, h = local_api.client, local_api.as_operator()
    start = utc(local_api.clock())
    expires = (start + timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    body = {"name": "cut", "target": "llama", "kind": "prewarm", "replicas": 3, "expires_at": expires,
            "reason": "window cut by expiry", "schedule": {"cron": "* * * * *", "duration": "10m"}}
    assert c.post(OVERRIDES, json=body, headers=h).status_code == 201
    local_api.clock.advance(60)
    assert c.get(f"{OVERRIDES}/cut", headers=h).json()["active_until"] == expires
    local_api.clock.advance(119)
    assert c.get(f"{OVERRIDES}/cut", headers=h).json()["active"] is True
    local_api.clock.advance(1)
    assert c.get(f"{OVERRIDES}/cut", headers=h).json()["active"] is False
