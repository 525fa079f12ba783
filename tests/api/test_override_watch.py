"""The Kubernetes store reads overrides from its watch while the watch is up (no API server round
trip: here there is no API server at all), sees its own writes at once, ignores a deleted object's
late events, and reads the API server again (a 503 when it is away) while the watch is down."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from autoscaler.contract import OverrideKind
from autoscaler.overrides.errors import Conflict, Unavailable
from autoscaler.overrides.kube import KubeOverrideStore, to_object
from autoscaler.overrides.model import ScalingOverride
from autoscaler.overrides.validate import check_conflicts
from autoscaler.overrides.watch import OverrideWatch
from tests.api.test_api_errors import dead_api_server

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def stored(name: str, namespace: str = "default", target: str = "llama", kind: str = "pin", rv: int = 1,
           uid: str | None = None, key: str | None = None) -> dict:
    ov = ScalingOverride(namespace=namespace, name=name, target=target, kind=OverrideKind(kind),
                         replicas=3 if kind in ("pin", "prewarm") else None, expires_at=NOW + timedelta(hours=1),
                         reason="r", author="alice", created_at=NOW)
    obj = to_object(ov, key, "hash-" + name if key else None)
    obj["metadata"].update(uid=uid or f"uid-{name}", resourceVersion=str(rv), creationTimestamp="2026-12-01T08:00:00Z")
    return obj


@pytest.fixture
def watched():
    client = dead_api_server()
    watch = OverrideWatch(client)         # never started: events are fed by hand
    store = KubeOverrideStore(client, watch=watch)
    for event in ({"type": "ADDED", "object": stored("a", rv=1)},
                  {"type": "ADDED", "object": stored("b", target="qwen", rv=2, key="k1")},
                  {"type": "ADDED", "object": stored("c", namespace="other", rv=3)},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "4"}}}):
        watch._apply(event, "0")
    watch._up = True
    return watch, store


def test_reads_come_from_the_watch_without_the_api_server(watched):
    watch, store = watched
    assert [o.name for o in store.list()] == ["a", "b", "c"]
    assert [o.name for o in store.list("default")] == ["a", "b"]
    assert [o.name for o in store.list("default", "qwen")] == ["b"]
    assert store.get("default", "a").replicas == 3
    found = store.find_idempotent("default", "k1")
    assert found is not None and (found[0].name, found[1]) == ("b", "hash-b")
    assert store.find_idempotent("default", "k2") is None
    # the conflict check before a create reads the same cache: a second pin on llama is refused
    new_pin = ScalingOverride.model_validate({**store.get("default", "a").model_dump(), "name": "a2"})
    with pytest.raises(Conflict):
        check_conflicts(new_pin, store.list("default", "llama"), NOW)
    # what is not in the cache is asked of the server (created through another replica a moment ago?)
    with pytest.raises(Unavailable):
        store.get("default", "nope")
    with pytest.raises(Unavailable):     # after a clash, the idempotency look-up reads the server itself
        store.find_idempotent("default", "k1", fresh=True)


def test_version_changes_with_every_change_and_is_none_while_down(watched):
    watch, store = watched
    v = store.version()
    watch._apply({"type": "MODIFIED", "object": stored("a", rv=5)}, "4")
    assert store.version() != v
    v = store.version()
    watch._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}}, "5")
    assert store.version() == v
    watch._up = False
    assert store.version() is None
    with pytest.raises(Unavailable):     # down: the API server is read, and it is away: a 503
        store.list()
    with pytest.raises(Unavailable):
        store.get("default", "a")


def test_own_writes_are_seen_at_once_and_late_events_of_a_deleted_object_ignored(watched):
    watch, store = watched
    watch.wrote(stored("d", rv=7))
    assert "d" in [o.name for o in store.list("default")]
    watch.wrote(stored("d", rv=6))       # older than what the cache holds: ignored
    assert watch.entry("default", "d").resource_version == "7"
    watch.deleted("default", "a", "uid-a")
    assert [o.name for o in store.list("default")] == ["b", "d"]
    # the watch catches up late: the ADDED/MODIFIED of the deleted object must not bring it back
    watch._apply({"type": "MODIFIED", "object": stored("a", rv=8)}, "7")
    assert [o.name for o in store.list("default")] == ["b", "d"]
    watch._apply({"type": "DELETED", "object": stored("a", rv=9)}, "8")
    assert watch._tombstones == {}
    # a new object of the same name (another uid) is shown again
    watch._apply({"type": "ADDED", "object": stored("a", rv=10, uid="uid-a2")}, "9")
    assert store.get("default", "a").uid == "uid-a2"
    # a delete whose uid no longer matches leaves the new object alone
    watch.deleted("default", "a", "uid-a")
    assert store.get("default", "a").uid == "uid-a2"


def test_a_relist_drops_objects_deleted_here_meanwhile(watched):
    watch, store = watched
    watch.deleted("default", "a", "uid-a")

    class Listed:
        data = b'{"metadata": {"resourceVersion": "20"}, "items": %s}' % (
            json.dumps([stored("a", rv=1), stored("b", rv=2)]).encode())

    watch._list_fn = lambda **kw: Listed()
    assert watch._list() == "20"
    assert [o.name for o in store.list()] == ["b"]


def test_an_unreadable_object_is_left_out_of_lists(watched):
    watch, store = watched
    bad = stored("bad", rv=11)
    bad["spec"]["kind"] = "freeze"
    watch._apply({"type": "ADDED", "object": bad}, "10")
    assert "bad" not in [o.name for o in store.list()]
    assert watch.entry("default", "bad").override is None
    with pytest.raises(Unavailable):      # get asks the server, which would say what is wrong with it
        store.get("default", "bad")
