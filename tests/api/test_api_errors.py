"""Errors: bad input is a 4xx naming the field, never a 5xx; an unreachable API server (or store) is a
503 with Retry-After; a change whose audit record cannot be written is taken back (nothing half-written)."""
from __future__ import annotations

import kubernetes
import pytest
from fastapi.testclient import TestClient

from autoscaler.api import MemoryStatusSource, create_app
from autoscaler.api.auth import KubeAuth, StaticTokenAuth
from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
from autoscaler.overrides.errors import Unavailable
from autoscaler.overrides.kube import KubeAuditLog, KubeOverrideStore
from tests.api.conftest import OPERATOR_TOKEN, START, VIEWER_TOKEN, FakeClock, llama_state
from tests.ground.procs import free_port

PIN = {"target": "llama", "kind": "pin", "replicas": 4, "duration": "2h", "reason": "launch"}
OVERRIDES = "/v1/namespaces/default/overrides"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
TOKENS = {OPERATOR_TOKEN: ("alice", "operator"), VIEWER_TOKEN: ("bob", "viewer")}


def status_source() -> MemoryStatusSource:
    status = MemoryStatusSource()
    status.update(llama_state())
    return status


def dead_api_server() -> kubernetes.client.ApiClient:
    """A client for an API server that is not there (nothing listens on the port)."""
    config = kubernetes.client.Configuration()
    config.host = f"https://127.0.0.1:{free_port()}"
    config.verify_ssl = False
    config.retries = 0
    config.api_key = {"authorization": "Bearer x"}
    return kubernetes.client.ApiClient(config)


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert "unreachable" in response.json()["error"]["message"]


def test_unreachable_api_server_is_503_with_retry_after():
    client = dead_api_server()
    app = create_app(KubeOverrideStore(client), KubeAuditLog(client), status_source(), StaticTokenAuth(TOKENS),
                     clock=FakeClock(START))
    with TestClient(app) as c:
        assert_unavailable(c.get("/v1/overrides", headers=OPERATOR))
        assert_unavailable(c.get(f"{OVERRIDES}/launch", headers=OPERATOR))
        assert_unavailable(c.post(OVERRIDES, json=PIN, headers=OPERATOR))
        assert_unavailable(c.delete(f"{OVERRIDES}/launch", headers=OPERATOR))
        assert_unavailable(c.get("/v1/audit", headers=OPERATOR))
        # bad input is still named before the store is asked
        assert c.post(OVERRIDES, json={**PIN, "replicas": 11}, headers=OPERATOR).status_code == 422


def test_unreachable_api_server_during_token_review_is_503(tmp_path):
    db = tmp_path / "w.db"
    app = create_app(SqliteOverrideStore(db), SqliteAuditLog(db), status_source(), KubeAuth(dead_api_server()),
                     clock=FakeClock(START))
    with TestClient(app) as c:
        assert_unavailable(c.get("/v1/overrides", headers=OPERATOR))
        assert c.get("/v1/overrides").status_code == 401      # no token: nothing to ask the server


class FailingAudit(SqliteAuditLog):
    """An audit log whose writes fail (the API server or disk gone between two calls)."""

    def record(self, entry):
        raise Unavailable("audit store unreachable")


class FailingDeletes(SqliteOverrideStore):
    def delete(self, namespace, name, uid=None):
        raise Unavailable("override store unreachable")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "warmscale.db"


def test_create_whose_audit_fails_is_taken_back(db):
    store = SqliteOverrideStore(db)
    app = create_app(store, FailingAudit(db), status_source(), StaticTokenAuth(TOKENS), clock=FakeClock(START))
    with TestClient(app) as c:
        response = c.post(OVERRIDES, json=PIN, headers=OPERATOR)
        assert response.status_code == 503 and "was not made" in response.json()["error"]["message"]
    assert store.list() == []


def test_delete_whose_audit_fails_keeps_the_override(db):
    store, audit = SqliteOverrideStore(db), SqliteAuditLog(db)
    with TestClient(create_app(store, audit, status_source(), StaticTokenAuth(TOKENS), clock=FakeClock(START))) as c:
        name = c.post(OVERRIDES, json=PIN, headers=OPERATOR).json()["override"]["name"]
    with TestClient(create_app(store, FailingAudit(db), status_source(), StaticTokenAuth(TOKENS),
                               clock=FakeClock(START))) as c:
        assert c.delete(f"{OVERRIDES}/{name}", headers=OPERATOR).status_code == 503
    assert [o.name for o in store.list()] == [name]
    assert [e.action for e in audit.query()[0]] == ["create"]


def test_delete_that_fails_leaves_no_audit_record(db):
    store, audit = SqliteOverrideStore(db), SqliteAuditLog(db)
    with TestClient(create_app(store, audit, status_source(), StaticTokenAuth(TOKENS), clock=FakeClock(START))) as c:
        name = c.post(OVERRIDES, json=PIN, headers=OPERATOR).json()["override"]["name"]
    with TestClient(create_app(FailingDeletes(db), audit, status_source(), StaticTokenAuth(TOKENS),
                               clock=FakeClock(START))) as c:
        response = c.delete(f"{OVERRIDES}/{name}", headers=OPERATOR)
        assert response.status_code == 503 and response.headers["Retry-After"]
    assert [o.name for o in store.list()] == [name]
    assert [e.action for e in audit.query()[0]] == ["create"]


BAD_BODIES = [
    ({**PIN, "replicas": "four"}, "replicas"),
    ({**PIN, "replicas": 10**12}, "replicas"),
    ({**PIN, "expires_at": "tomorrow", "duration": None}, "expires_at"),
    ({**PIN, "duration": None, "expires_at": "2027-02-01T00:00:00Z"}, "expires_at"),      # beyond 30 days
    ({**PIN, "duration": None, "expires_at": "9999-12-31T23:59:59Z"}, "expires_at"),
    ({**PIN, "duration": None, "expires_at": "2026-12-01T09:00:00+14:00"}, "expires_at"),  # 19:00 UTC the day before
    ({**PIN, "expires_at": "2026-12-01T10:00:00Z"}, "duration"),                          # both given
    ({**PIN, "duration": "99999999999999999999d"}, "duration"),
    ({**PIN, "duration": "2 hours"}, "duration"),
    ({**PIN, "schedule": {"cron": "0 9 * * * *", "duration": "1h"}}, "schedule.cron"),
    ({**PIN, "schedule": {"cron": "0 9 30 2 *", "duration": "1h"}}, "schedule.cron"),     # 30 February never comes
    ({**PIN, "schedule": {"cron": "0 9 * * *", "duration": "0s"}}, "schedule.duration"),
    ({**PIN, "schedule": {"cron": "0 9 * * *"}}, "schedule.duration"),
    ({**PIN, "name": "Not_A_Name"}, "name"),
    ({**PIN, "name": "x" * 64}, "name"),
    ({**PIN, "target": ""}, "target"),
    ({**PIN, "kind": "pause", "replicas": 4}, "replicas"),
    ({**PIN, "kind": "bounds", "replicas": None, "max_replicas": 11}, "max_replicas"),
    ({**PIN, "kind": "prewarm", "replicas": None}, "replicas"),
    ({**PIN, "reason": ""}, "reason"),
    ({**PIN, "reason": "r" * 1025}, "reason"),
]


@pytest.mark.parametrize("body, field", BAD_BODIES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_BODIES)])
def test_bad_body_is_422_naming_the_field(local_api, body, field):
    response = local_api.client.post(OVERRIDES, json=body, headers=local_api.as_operator())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert local_api.store.list() == []


@pytest.mark.parametrize("method, url, kwargs", [
    ("POST", OVERRIDES, {"json": None}),
    ("POST", OVERRIDES, {"json": [PIN]}),
    ("POST", OVERRIDES, {"json": "pin"}),
    ("POST", OVERRIDES, {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/namespaces/Bad_NS/overrides", {"json": PIN}),
    ("GET", "/v1/overrides?limit=0", {}),
    ("GET", "/v1/overrides?limit=abc", {}),
    ("GET", "/v1/overrides?active=maybe", {}),
    ("GET", "/v1/audit?continue=abc", {}),
    ("GET", "/v1/overrides?continue=" + "A" * 5000, {}),
    ("GET", "/v1/namespaces/default/overrides/" + "a" * 70, {}),
    ("POST", OVERRIDES, {"json": PIN, "headers": {"Idempotency-Key": "k" * 300}}),
])
def test_malformed_requests_are_4xx_never_5xx(local_api, method, url, kwargs):
    headers = {**local_api.as_operator(), **kwargs.pop("headers", {})}
    response = local_api.client.request(method, url, headers=headers, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["status"] == response.status_code and error["message"]
    assert local_api.store.list() == []
