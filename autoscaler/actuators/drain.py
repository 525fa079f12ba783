"""Drain-safe scale-down: before the replica count drops, every Ready engine pod is annotated with
`controller.kubernetes.io/pod-deletion-cost` = its running requests, so the ReplicaSet controller
removes the idlest pods first and the busiest keep their in-flight generations. (The engine's
preStop hook and grace period drain whatever the chosen pods still hold.)"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import kubernetes

from autoscaler.controller.pods import PodInfo

__all__ = ["DELETION_COST", "deletion_costs", "mark_deletion_costs"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deletion_costs(pods: Sequence[PodInfo], running: Mapping[str, float | None]) -> dict[str, int]:
    """Pod name -> cost. Cost = running requests (rounded up); a pod whose count is unknown is
    taken for the busiest (max known + 1): never remove a pod we could not see for an idle one."""
    known = {p.name: int(-(-running[p.name] // 1)) for p in pods if running.get(p.name) is not None}
    unknown_cost = max(known.values(), default=0) + 1
    return {p.name: known.get(p.name, unknown_cost) for p in pods}


def mark_deletion_costs(core: kubernetes.client.CoreV1Api, pods: Sequence[PodInfo],
                        running: Mapping[str, float | None]) -> list[str]:
    """Patch the cost annotation on each pod whose value changes; returns the pods patched."""
    patched = []
    costs = deletion_costs(pods, running)
    for pod in pods:
        value = str(costs[pod.name])
        if pod.deletion_cost == value:
            continue
        core.patch_namespaced_pod(pod.name, pod.namespace, {"metadata": {"annotations": {DELETION_COST: value}}})
        patched.append(pod.name)
    return patched
