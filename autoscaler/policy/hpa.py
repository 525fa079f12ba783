"""Baseline: Kubernetes HPA v2 on CPU utilisation of a GPU-bound vLLM server.

Faithful to the HPA algorithm and its published defaults:
- desiredReplicas = ceil(currentMetricValue / desiredMetricValue x readyPods); no change while
  |ratio - 1| <= 0.1 (the controller's --horizontal-pod-autoscaler-tolerance default).
  kubernetes/website content/en/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale.md
  ("Algorithm details").
- Pods not yet Ready count as 0 % CPU when the ratio says "scale up", and are ignored when it
  says "scale down"; a scale-up that turns into a scale-down after that correction is dropped.
  kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator.go (GetResourceReplicas).
- Sync period 15 s (--horizontal-pod-autoscaler-sync-period). Default behaviour: scale-down
  stabilisation 300 s with Percent 100 / 15 s; scale-up stabilisation 0 s with
  max(Percent 100, Pods 4) / 15 s (docs "Default Behavior"); see _common.HpaStabilizer.
- Missing metrics: the HPA skips the scale (FailedGetResourceMetric) -> hold.

Model of the workload (why this baseline is weak on LLM serving): vLLM's engine core busy-polls
a CPU core whether or not it has work, so `Observation.cpu_utilization` (mean over ready pods,
relative to the pod's CPU request) is roughly constant per replica; it tracks the replica count,
not the load. The simulator supplies that number; this policy only reads it.

target_cpu_utilization: the docs' walkthrough uses 50 %; 80 % is the usual production choice for
servers and is used here (override with target_cpu_utilization=...).
"""
from __future__ import annotations

import math

from pydantic import Field

from autoscaler.policy._common import HpaStabilizer, PolicyConfig, clean, is_stale
from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.types import Decision, Observation, Reason, Signal

__all__ = ["HpaBehavior", "HpaCpuConfig", "HpaCpuPolicy", "hpa_recommendation"]


class HpaBehavior(PolicyConfig):
    """The HPA v2 defaults every HPA-driven scaler inherits: tolerance, stabilisation and rate policies."""

    tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    scale_up_stabilization_s: float = Field(0.0, ge=0.0)
    scale_down_stabilization_s: float = Field(300.0, ge=0.0)
    scale_up_percent: float = Field(100.0, ge=0.0)
    scale_up_pods: int = Field(4, ge=0)
    scale_up_period_s: float = Field(15.0, gt=0.0)
    scale_down_percent: float = Field(100.0, ge=0.0, le=100.0)
    scale_down_period_s: float = Field(15.0, gt=0.0)
    staleness_s: float = Field(60.0, gt=0.0)


class HpaCpuConfig(HpaBehavior):
    min_replicas: int = Field(1, ge=1)          # HPA's minReplicas defaults to 1 and cannot be 0
    max_replicas: int = Field(1000, ge=1)
    target_cpu_utilization: float = Field(0.8, gt=0.0)
    interval_s: float = Field(15.0, gt=0.0)


def hpa_recommendation(current: int, ready: int, unready: int, usage_ratio: float, tolerance: float) -> int:
    """HPA's replica calculation for a utilisation metric averaged over ready pods
    (replica_calculator.go). `usage_ratio` = current/target over the ready pods."""
    scale_up_with_unready = unready > 0 and usage_ratio > 1.0
    if not scale_up_with_unready:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current
        return int(math.ceil(usage_ratio * ready))
    # unready pods count as 0 % of target when scaling up
    new_ratio = usage_ratio * ready / (ready + unready)
    if abs(1.0 - new_ratio) <= tolerance or new_ratio < 1.0:
        return current
    new_replicas = int(math.ceil(new_ratio * (ready + unready)))
    return current if new_replicas < current else new_replicas


class _HpaState:
    __slots__ = ("stab",)

    def __init__(self, cfg: HpaCpuConfig) -> None:
        self.stab = HpaStabilizer(
            up_window_s=cfg.scale_up_stabilization_s, down_window_s=cfg.scale_down_stabilization_s,
            up_percent=cfg.scale_up_percent, up_pods=cfg.scale_up_pods, up_period_s=cfg.scale_up_period_s,
            down_percent=cfg.scale_down_percent, down_period_s=cfg.scale_down_period_s)


def finish_hpa(stab: HpaStabilizer, obs: Observation, cur: int, raw: int, min_r: int, max_r: int,
               signal: str, detail: str) -> Decision:
    """HPA's normalizeDesiredReplicasWithBehaviors: stabilise, rate-limit, clamp; then record."""
    t = float(obs.time)
    stabilized = stab.stabilize(t, cur, raw)
    desired, limited = stab.rate_limit(t, cur, stabilized)
    if desired > cur:
        reason = Reason.RATE_LIMITED_UP if limited else Reason.SCALE_UP_STABLE
    elif desired < cur:
        reason = Reason.RATE_LIMITED_DOWN if limited else Reason.SCALE_DOWN_STABLE
    elif raw < cur:
        reason = Reason.HOLD_STABILIZATION
    elif raw == cur:
        reason = Reason.HOLD_TOLERANCE if detail.startswith("within") else Reason.HOLD_STEADY
    else:
        reason = Reason.HOLD_STEADY
    if desired > max_r:
        desired, reason = max_r, Reason.BOUNDED_MAX
    elif desired < min_r:
        desired, reason = min_r, Reason.BOUNDED_MIN
    stab.record_change(t, cur, desired)
    return Decision(model=obs.model, time=t, current=cur, desired=desired, reason=reason,
                    signal=signal, detail=f"{detail}; raw {raw} -> stabilised {stabilized} -> {desired}")


class HpaCpuPolicy:
    name = "hpa-cpu"

    def __init__(self, capacity: ReplicaCapacity, config: HpaCpuConfig | None = None) -> None:
        self.capacity = capacity
        self.config = config or HpaCpuConfig()
        self.interval_s = self.config.interval_s
        self._states: dict[str, _HpaState] = {}

    def decide(self, obs: Observation) -> Decision:
        cfg = self.config
        st = self._states.get(obs.model)
        if st is None:
            st = self._states[obs.model] = _HpaState(cfg)
        t = float(obs.time)
        ready = max(0, int(obs.ready_replicas))
        loading = max(0, int(obs.loading_replicas))
        cur = ready + loading
        if cur == 0:
            # HPA is disabled while the target is scaled to 0; it never scales from zero.
            return Decision(obs.model, t, 0, 0, Reason.HOLD_AT_ZERO, Signal.CPU, "HPA does not scale from zero")
        cpu = clean(obs.cpu_utilization)
        if cpu is None or ready == 0:
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_MISSING, Signal.CPU,
                            "no CPU metric from a ready pod: HPA skips this sync")
        if is_stale(t, obs.metrics_time, cfg.staleness_s):
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_STALE, Signal.CPU, "CPU metric stale")
        ratio = cpu / cfg.target_cpu_utilization
        raw = hpa_recommendation(cur, ready, loading, ratio, cfg.tolerance)
        tol = "within tolerance" if raw == cur and abs(1.0 - ratio) <= cfg.tolerance else "cpu"
        detail = f"{tol}: cpu {cpu:.0%} / target {cfg.target_cpu_utilization:.0%} = {ratio:.2f} x {ready} ready"
        return finish_hpa(st.stab, obs, cur, raw, cfg.min_replicas, cfg.max_replicas, Signal.CPU, detail)
