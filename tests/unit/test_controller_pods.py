"""Counting engine pods: Ready is capacity, starting is capacity on the way, unschedulable is neither."""
from __future__ import annotations

from autoscaler.actuators.drain import deletion_costs
from autoscaler.controller.pods import PodIndex, count_fleet, pod_info


def _pod(name, ready=False, node="n1", unschedulable=False, deleting=False, labels=None):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."})
    meta = {"name": name, "namespace": "ns", "labels": labels or {"app": "e"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {} if unschedulable else {"nodeName": node},
            "status": {"phase": "Running" if ready else "Pending", "conditions": conditions, "podIP": "10.244.0.9"}}


def test_fleet_count_separates_ready_loading_and_unschedulable():
    pods = [pod_info(p) for p in (_pod("a", ready=True), _pod("b"), _pod("c", unschedulable=True),
                                  _pod("d", ready=True, deleting=True))]
    fleet = count_fleet(pods)
    assert [p.name for p in fleet.ready] == ["a"]
    assert [p.name for p in fleet.loading] == ["b"]
    assert [p.name for p in fleet.unschedulable] == ["c"]
    assert "Insufficient nvidia.com/gpu" in fleet.limited_message


def test_pod_index_selects_by_every_label():
    pods = [pod_info(_pod("a", labels={"app": "e", "tier": "x"})), pod_info(_pod("b", labels={"app": "e"})),
            pod_info(_pod("c", labels={"app": "f"}))]
    index = PodIndex(pods)
    assert [p.name for p in index.select("ns", {"app": "e"})] == ["a", "b"]
    assert [p.name for p in index.select("ns", {"app": "e", "tier": "x"})] == ["a"]
    assert index.select("other", {"app": "e"}) == []


def test_deletion_cost_is_running_requests_and_unknown_counts_as_busiest():
    pods = [pod_info(_pod(n, ready=True)) for n in ("a", "b", "c")]
    assert deletion_costs(pods, {"a": 3.0, "b": 0.0, "c": None}) == {"a": 3, "b": 0, "c": 4}
