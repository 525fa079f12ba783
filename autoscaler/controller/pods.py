"""Engine pods as the controller counts them: Ready (capacity), starting (capacity on the way) or
unschedulable (Pending with no node: not capacity at all). Pods are kept as small tuples, not
client models, so thousands of them stay cheap to hold and to index every tick."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from autoscaler.metrics.resolver import PodRef

__all__ = ["PodInfo", "FleetCount", "pod_info", "count_fleet", "PodIndex"]


@dataclass(frozen=True, slots=True)
class PodInfo:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ip: str | None
    ready: bool
    scheduled: bool
    terminating: bool
    unschedulable: str | None      # the scheduler's message when it cannot place the pod
    deletion_cost: str | None

    @property
    def ref(self) -> PodRef:
        return PodRef(self.name, self.namespace, self.ip)

    def matches(self, selector: Mapping[str, str]) -> bool:
        labels = dict(self.labels)
        return all(labels.get(k) == v for k, v in selector.items())


def pod_info(pod: dict) -> PodInfo:
    """A raw pod object (JSON from the API server) -> PodInfo."""
    meta, status, spec = pod.get("metadata", {}), pod.get("status", {}) or {}, pod.get("spec", {}) or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {}).get("status") == "True" and status.get("phase") == "Running"
    scheduled_cond = conditions.get("PodScheduled", {})
    unschedulable = None
    if not spec.get("nodeName") and scheduled_cond.get("reason") == "Unschedulable":
        unschedulable = scheduled_cond.get("message") or "Unschedulable"
    return PodInfo(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""),
        labels=tuple(sorted((meta.get("labels") or {}).items())), ip=status.get("podIP"),
        ready=ready, scheduled=bool(spec.get("nodeName")), terminating=meta.get("deletionTimestamp") is not None,
        unschedulable=unschedulable,
        deletion_cost=(meta.get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost"))


@dataclass(frozen=True, slots=True)
class FleetCount:
    ready: tuple[PodInfo, ...]
    loading: tuple[PodInfo, ...]       # scheduled (or not yet judged by the scheduler), not Ready
    unschedulable: tuple[PodInfo, ...]

    @property
    def limited_message(self) -> str | None:
        if not self.unschedulable:
            return None
        first = self.unschedulable[0]
        return f"{len(self.unschedulable)} pod(s) cannot be scheduled, e.g. {first.name}: {first.unschedulable}"


def count_fleet(pods: Iterable[PodInfo]) -> FleetCount:
    ready, loading, unschedulable = [], [], []
    for pod in pods:
        if pod.terminating:
            continue
        if pod.ready:
            ready.append(pod)
        elif pod.unschedulable:
            unschedulable.append(pod)
        else:
            loading.append(pod)
    key = lambda p: p.name  # noqa: E731 - stable order for tests and patches
    return FleetCount(tuple(sorted(ready, key=key)), tuple(sorted(loading, key=key)), tuple(sorted(unschedulable, key=key)))


class PodIndex:
    """Pods of one tick indexed by (namespace, label, value): a model's selector looks up its
    rarest label and filters that short list, so 1,000 models over thousands of pods stay cheap."""

    def __init__(self, pods: Iterable[PodInfo]):
        self._by_label: dict[tuple[str, str, str], list[PodInfo]] = defaultdict(list)
        for pod in pods:
            for key, value in pod.labels:
                self._by_label[(pod.namespace, key, value)].append(pod)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[PodInfo]:
        if not selector:
            return []
        candidates = min((self._by_label.get((namespace, k, v), []) for k, v in selector.items()), key=len)
        return [p for p in candidates if p.matches(selector)]
