"""Baseline: KEDA's Prometheus scaler on `vllm:num_requests_waiting`, as vLLM's production stack
ships it, with the Kubernetes HPA underneath.

Sources:
- vllm-project/production-stack docs/source/use_cases/autoscaling-keda.rst: trigger `prometheus`,
  query `vllm:num_requests_waiting`, threshold '5', pollingInterval 15, cooldownPeriod 360,
  minReplicaCount 1 (maxReplicaCount 3 in the example; here a config field).
- kedacore/keda-docs content/docs/2.x/reference/scaledobject-spec.md: KEDA owns 0 <-> 1
  (activate when metric > activationThreshold, default 0; deactivate after cooldownPeriod
  without activity, only when minReplicaCount is 0); 1 <-> N is the HPA's, fed the metric as an
  External metric with target type AverageValue = threshold.
- HPA on an AverageValue external metric: desired = ceil(metric / threshold), no change while
  |metric / (threshold x current) - 1| <= 0.1 (replica_calculator.go
  GetExternalPerPodMetricReplicas); then HPA default behaviour: 300 s scale-down stabilisation,
  scale-up max(100 %, 4 pods) / 15 s (see _common.HpaStabilizer).

The query returns one series per pod; the value that reaches the HPA is modelled as their sum
(what `sum(vllm:num_requests_waiting)` returns), i.e. `Observation.waiting_requests`.
"""
from __future__ import annotations

import math

from pydantic import Field

from autoscaler.policy._common import HpaStabilizer, clean, is_stale
from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.hpa import HpaBehavior, finish_hpa
from autoscaler.policy.types import Decision, Observation, Reason, Signal

__all__ = ["KedaConfig", "KedaPolicy"]


class KedaConfig(HpaBehavior):
    min_replicas: int = Field(1, ge=0)           # minReplicaCount (production stack: 1)
    max_replicas: int = Field(1000, ge=1)        # maxReplicaCount
    threshold: float = Field(5.0, gt=0.0)        # waiting requests per replica (AverageValue)
    activation_threshold: float = Field(0.0, ge=0.0)
    polling_interval_s: float = Field(15.0, gt=0.0)
    cooldown_period_s: float = Field(360.0, ge=0.0)


class _KedaState:
    __slots__ = ("stab", "last_active")

    def __init__(self, cfg: KedaConfig) -> None:
        self.stab = HpaStabilizer(
            up_window_s=cfg.scale_up_stabilization_s, down_window_s=cfg.scale_down_stabilization_s,
            up_percent=cfg.scale_up_percent, up_pods=cfg.scale_up_pods, up_period_s=cfg.scale_up_period_s,
            down_percent=cfg.scale_down_percent, down_period_s=cfg.scale_down_period_s)
        self.last_active: float | None = None


class KedaPolicy:
    name = "keda"

    def __init__(self, capacity: ReplicaCapacity, config: KedaConfig | None = None) -> None:
        self.capacity = capacity
        self.config = config or KedaConfig()
        self.interval_s = self.config.polling_interval_s
        self._states: dict[str, _KedaState] = {}

    def decide(self, obs: Observation) -> Decision:
        cfg = self.config
        st = self._states.get(obs.model)
        if st is None:
            st = self._states[obs.model] = _KedaState(cfg)
        t = float(obs.time)
        cur = max(0, int(obs.ready_replicas)) + max(0, int(obs.loading_replicas))
        w = clean(obs.waiting_requests)
        if w is None:
            # no fallback configured in the production stack: the scaler errors, HPA holds
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_MISSING, Signal.QUEUE,
                            "vllm:num_requests_waiting missing")
        if is_stale(t, obs.metrics_time, cfg.staleness_s):
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_STALE, Signal.QUEUE, "metric stale")
        active = w > cfg.activation_threshold
        if active:
            st.last_active = t
        hpa_min = max(1, cfg.min_replicas)
        if cur == 0:
            if active:
                desired = min(max(1, cfg.min_replicas), cfg.max_replicas)
                return Decision(obs.model, t, 0, desired, Reason.ACTIVATE_FROM_ZERO, Signal.QUEUE,
                                f"waiting {w:.0f} > activationThreshold {cfg.activation_threshold:g}")
            if cfg.min_replicas > 0:
                return Decision(obs.model, t, 0, min(cfg.min_replicas, cfg.max_replicas), Reason.BOUNDED_MIN,
                                Signal.QUEUE, "minReplicaCount")
            return Decision(obs.model, t, 0, 0, Reason.HOLD_AT_ZERO, Signal.QUEUE, "inactive")
        if cfg.min_replicas == 0 and not active:
            if st.last_active is None:
                st.last_active = t
            if t - st.last_active >= cfg.cooldown_period_s:
                return Decision(obs.model, t, cur, 0, Reason.SCALE_TO_ZERO, Signal.QUEUE,
                                f"inactive for {t - st.last_active:.0f}s >= cooldownPeriod {cfg.cooldown_period_s:g}s")
        ratio = w / (cfg.threshold * cur)
        if abs(1.0 - ratio) <= cfg.tolerance:
            raw, tol = cur, "within tolerance"
        else:
            raw, tol = int(math.ceil(w / cfg.threshold)), "queue"
        detail = f"{tol}: waiting {w:.0f} / threshold {cfg.threshold:g} (x{cur} = {ratio:.2f})"
        return finish_hpa(st.stab, obs, cur, raw, hpa_min, cfg.max_replicas, Signal.QUEUE, detail)
