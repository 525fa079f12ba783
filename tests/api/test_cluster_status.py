"""What the controller-served API reports about autoscalers, read from ModelAutoscaler objects."""
from __future__ import annotations

from fastapi.testclient import TestClient

from autoscaler.api import create_app
from autoscaler.api.auth import StaticTokenAuth
from autoscaler.api.cluster import ModelAutoscalerStatus
from autoscaler.contract import Reason
from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
from tests.api.conftest import OPERATOR_TOKEN, START, VIEWER_TOKEN, FakeClock

PIN_RECORD = {"time": "2026-12-01T08:00:05Z", "current": 2, "desired": 3, "reason": "override_pin", "signal": "override",
              "detail": "pinned", "explain": {"override": "launch", "limits": ["override_pin"], "need": {"queue": 2.0}}}


def autoscaler(name: str, status: dict | None = None) -> dict:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"model": f"{name}-8b", "minReplicas": 1, "maxReplicas": 6}, "status": status or {}}


class Cache:
    def __init__(self, *objects: dict) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}

    def items(self) -> list[dict]:
        return list(self.objects.values())

    def get(self, namespace: str, name: str) -> dict | None:
        return self.objects.get((namespace, name))


OVERRIDDEN = {"currentReplicas": 3, "desiredReplicas": 3, "readyReplicas": 2, "loadingReplicas": 1,
              "lastDecision": PIN_RECORD, "recentDecisions": [PIN_RECORD, {**PIN_RECORD, "reason": "from_the_future"}],
              "conditions": [{"type": "Overridden", "status": "True", "reason": "Override"}]}


def test_state_and_decisions_come_from_spec_and_status():
    source = ModelAutoscalerStatus(Cache(autoscaler("qwen"), autoscaler("llama", OVERRIDDEN)))
    assert [s.name for s in source.list_autoscalers()] == ["llama", "qwen"]
    llama = source.get_autoscaler("default", "llama")
    assert (llama.current, llama.ready, llama.loading, llama.max_replicas, llama.active_override) == (3, 2, 1, 6, "launch")
    assert llama.updated_at == START + 5
    fresh = source.get_autoscaler("default", "qwen")
    assert (fresh.current, fresh.active_override, fresh.updated_at) == (0, None, 0.0)
    decisions = source.recent_decisions("default", "llama", 10)
    assert decisions[0].reason is Reason.OVERRIDE_PIN and decisions[0].explain.override == "launch"
    assert decisions[1].reason == "from_the_future"
    assert source.recent_decisions("default", "nope", 10) == [] and source.get_autoscaler("default", "nope") is None


def test_an_ended_override_is_not_reported_active():
    ended = {**OVERRIDDEN, "conditions": [{"type": "Overridden", "status": "False", "reason": "NoOverride"}]}
    assert ModelAutoscalerStatus(Cache(autoscaler("llama", ended))).get_autoscaler("default", "llama").active_override is None


def test_the_app_serves_them_and_checks_new_overrides_against_the_spec_bounds(tmp_path):
    db = tmp_path / "w.db"
    auth = StaticTokenAuth({OPERATOR_TOKEN: ("alice", "operator"), VIEWER_TOKEN: ("bob", "viewer")})
    app = create_app(SqliteOverrideStore(db), SqliteAuditLog(db), ModelAutoscalerStatus(Cache(autoscaler("llama", OVERRIDDEN))),
                     auth, clock=FakeClock(START))
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with TestClient(app) as c:
        got = c.get("/v1/namespaces/default/autoscalers/llama/decisions", headers=headers).json()["items"]
        assert [d["reason"] for d in got] == ["override_pin", "from_the_future"]
        assert got[0]["explain"]["need"] == {"queue": 2.0}
        body = {"target": "llama", "kind": "prewarm", "replicas": 7, "duration": "1h", "reason": "event"}
        response = c.post("/v1/namespaces/default/overrides", json=body, headers=headers)
        assert response.status_code == 422 and response.json()["error"]["field"] == "replicas"
