"""The API app in local mode (SQLite store, static tokens): auth, errors, idempotency, pagination,
audit, expiry and schedules on an injected clock."""
from __future__ import annotations

from autoscaler.overrides import delete_expired
from tests.api.conftest import START, llama_state

PIN = {"target": "llama", "kind": "pin", "replicas": 4, "duration": "2h", "reason": "launch"}
OVERRIDES = "/v1/namespaces/default/overrides"


def error_of(response) -> dict:
    return response.json()["error"]


def test_no_token_is_401_and_bad_token_is_401(local_api):
    c = local_api.client
    assert c.get("/v1/overrides").status_code == 401
    response = c.get("/v1/overrides", headers={"Authorization": "Bearer nope-not-a-token"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_viewer_reads_but_may_not_mutate(local_api):
    c = local_api.client
    assert c.get("/v1/overrides", headers=local_api.as_viewer()).status_code == 200
    response = c.post(OVERRIDES, json=PIN, headers=local_api.as_viewer())
    assert response.status_code == 403 and "create" in error_of(response)["message"]
    assert local_api.store.list() == []


def test_operator_creates_lists_gets_deletes_and_everything_is_audited(local_api):
    c, h = local_api.client, local_api.as_operator()
    created = c.post(OVERRIDES, json=PIN, headers=h)
    assert created.status_code == 201
    ov = created.json()["override"]
    assert (ov["author"], ov["replicas"], ov["active"]) == ("alice", 4, True)
    name = ov["name"]
    assert [o["name"] for o in c.get("/v1/overrides", headers=h).json()["items"]] == [name]
    assert c.get(f"{OVERRIDES}/{name}", headers=h).json()["uid"] == ov["uid"]
    local_api.clock.advance(60)
    assert c.delete(f"{OVERRIDES}/{name}", headers=h).status_code == 200
    assert c.get(f"{OVERRIDES}/{name}", headers=h).status_code == 404
    audit = c.get("/v1/audit", headers=local_api.as_viewer()).json()["items"]
    assert [(e["action"], e["actor"]) for e in audit] == [("delete", "alice"), ("create", "alice")]
    assert audit[0]["previous"]["replicas"] == 4 and audit[0]["current"] is None
    assert audit[1]["current"]["name"] == name


def test_bad_input_names_the_field_and_changes_nothing(local_api):
    c, h = local_api.client, local_api.as_operator()
    cases = [
        ({**PIN, "target": "nope"}, 422, "target"),
        ({**PIN, "replicas": 11}, 422, "replicas"),
        ({**PIN, "replicas": -1}, 422, "replicas"),
        ({**PIN, "duration": "0s"}, 422, "duration"),
        ({**PIN, "duration": "40d"}, 422, "duration"),
        ({**PIN, "duration": None, "expires_at": "2026-12-01T07:00:00Z"}, 422, "expires_at"),
        ({**PIN, "duration": None}, 422, "duration"),
        ({**PIN, "kind": "freeze"}, 422, "kind"),
        ({**PIN, "schedule": {"cron": "0 25 * * *", "duration": "1h"}}, 422, "schedule.cron"),
        ({**PIN, "schedule": {"cron": "0 9 * * *", "time_zone": "Nowhere/Land", "duration": "1h"}}, 422,
         "schedule.time_zone"),
        ({**PIN, "kind": "bounds", "replicas": None, "min_replicas": 6, "max_replicas": 2}, 422, "min_replicas"),
        ({**PIN, "colour": "blue"}, 422, "colour"),
        ({k: v for k, v in PIN.items() if k != "reason"}, 422, "reason"),
    ]
    for body, status, field in cases:
        response = c.post(OVERRIDES, json=body, headers=h)
        assert (response.status_code, error_of(response)["field"]) == (status, field), body
    assert local_api.store.list() == [] and local_api.audit.query()[0] == []
    response = c.post(OVERRIDES, content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert response.status_code == 422


def test_unknown_autoscaler_and_unknown_override_are_404(local_api):
    c, h = local_api.client, local_api.as_viewer()
    response = c.get("/v1/namespaces/default/autoscalers/nope", headers=h)
    assert response.status_code == 404 and error_of(response)["field"] == "name"
    assert c.get(f"{OVERRIDES}/nope", headers=h).status_code == 404
    assert c.delete(f"{OVERRIDES}/nope", headers=local_api.as_operator()).status_code == 404


def test_second_pin_conflicts_and_a_pause_is_told_the_pin_wins(local_api):
    c, h = local_api.client, local_api.as_operator()
    first = c.post(OVERRIDES, json=PIN, headers=h).json()["override"]["name"]
    response = c.post(OVERRIDES, json={**PIN, "replicas": 6}, headers=h)
    assert response.status_code == 409 and first in error_of(response)["message"]
    pause = c.post(OVERRIDES, json={**PIN, "kind": "pause", "replicas": None}, headers=h)
    assert pause.status_code == 201 and "wins" in pause.json()["warnings"][0]


def test_idempotency_key_replays_same_body_and_rejects_another(local_api):
    c, h = local_api.client, {**local_api.as_operator(), "Idempotency-Key": "deploy-42"}
    first = c.post(OVERRIDES, json=PIN, headers=h)
    again = c.post(OVERRIDES, json=PIN, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.json()["replayed"] is True
    assert again.json()["override"]["uid"] == first.json()["override"]["uid"]
    assert len(local_api.store.list()) == 1 and len(local_api.audit.query()[0]) == 1
    other = c.post(OVERRIDES, json={**PIN, "replicas": 5}, headers=h)
    assert other.status_code == 409 and error_of(other)["field"] == "Idempotency-Key"


def test_pagination_with_continue_token(local_api):
    c, h = local_api.client, local_api.as_operator()
    for i in range(5):
        body = {"target": "llama", "kind": "prewarm", "replicas": i + 1, "duration": "1h", "reason": f"r{i}",
                "name": f"pw-{i}"}
        assert c.post(OVERRIDES, json=body, headers=h).status_code == 201
    names, token = [], None
    while True:
        page = c.get("/v1/overrides", params={"limit": 2, **({"continue": token} if token else {})}, headers=h).json()
        assert len(page["items"]) <= 2
        names += [o["name"] for o in page["items"]]
        token = page["continue"]
        if not token:
            break
    assert names == [f"pw-{i}" for i in range(5)]
    audit_ids, token = [], None
    while True:
        page = c.get("/v1/audit", params={"limit": 2, **({"continue": token} if token else {})}, headers=h).json()
        audit_ids += [e["override"] for e in page["items"]]
        token = page["continue"]
        if not token:
            break
    assert audit_ids == [f"pw-{i}" for i in reversed(range(5))]
    bad = c.get("/v1/overrides", params={"continue": "garbage!"}, headers=h)
    assert bad.status_code == 422 and error_of(bad)["field"] == "continue"


def test_expiry_on_time_and_the_janitor_records_it(local_api):
    c, h = local_api.client, local_api.as_operator()
    name = c.post(OVERRIDES, json={**PIN, "duration": "10m"}, headers=h).json()["override"]["name"]
    local_api.clock.advance(599)
    assert [s.name for s in local_api.store.active_specs("default", "llama", local_api.clock())] == [name]
    local_api.clock.advance(1)
    # in force no longer, whether or not the janitor has run
    assert local_api.store.active_specs("default", "llama", local_api.clock()) == []
    assert c.get(f"{OVERRIDES}/{name}", headers=h).json()["active"] is False
    assert delete_expired(local_api.store, local_api.audit, local_api.clock()) == [f"default/{name}"]
    assert local_api.store.list() == []
    entry = local_api.audit.query()[0][0]
    assert (entry.action, entry.actor, entry.previous["name"]) == ("expire", "system:warmscale:janitor", name)


def test_scheduled_override_fires_at_its_cron_time(local_api):
    c, h = local_api.client, local_api.as_operator()
    # START is 08:00 UTC; the window opens at 09:30 Paris time (08:30 UTC) for 15 minutes
    body = {"target": "llama", "kind": "prewarm", "replicas": 8, "duration": "2d", "reason": "daily peak",
            "schedule": {"cron": "30 9 * * *", "time_zone": "Europe/Paris", "duration": "15m"}}
    created = c.post(OVERRIDES, json=body, headers=h).json()["override"]
    assert created["active"] is False and created["schedule"]["duration"] == "15m"
    fired = []
    for _ in range(60):          # one tick a minute for an hour
        local_api.clock.advance(60)
        if local_api.store.active_specs("default", "llama", local_api.clock()):
            fired.append(round((local_api.clock() - START) / 60))
    assert fired == list(range(30, 45))


def test_status_decisions_and_forecast(local_api):
    from autoscaler.contract import Decision, DemandForecast, Reason
    decision = Decision(model="llama-8b", time=START, current=3, desired=5, reason=Reason.SCALE_UP_STABLE,
                        signal="queue", detail="queue 40")
    forecast = DemandForecast(model="llama-8b", made_at=START, target_time=START + 60, request_rate_p50=3.0,
                              request_rate_p90=5.0)
    local_api.status.update(llama_state(desired=5), decision=decision, forecast=forecast)
    c, h = local_api.client, local_api.as_viewer()
    assert c.get("/v1/autoscalers", headers=h).json()["items"][0]["desired"] == 5
    decisions = c.get("/v1/namespaces/default/autoscalers/llama/decisions", headers=h).json()["items"]
    assert (decisions[0]["reason"], decisions[0]["desired"]) == ("scale_up_stable", 5)
    got = c.get("/v1/namespaces/default/autoscalers/llama/forecast", headers=h).json()["forecast"]
    assert got["request_rate_p90"] == 5.0


def test_openapi_documents_every_route(local_api):
    schema = local_api.client.get("/openapi.json").json()
    assert {"/v1/overrides", "/v1/namespaces/{namespace}/overrides", "/v1/audit", "/v1/autoscalers"} <= set(schema["paths"])
    assert local_api.client.get("/docs").status_code == 200
