"""Baseline: Knative Serving's KPA (concurrency), with its published defaults.

Sources (knative/serving):
- config/core/configmaps/autoscaler.yaml: container-concurrency-target-default 100,
  container-concurrency-target-percentage (target utilisation) 70, stable-window 60s,
  panic-window-percentage 10 (-> 6 s), panic-threshold-percentage 200, max-scale-up-rate 1000,
  max-scale-down-rate 2, scale-to-zero-grace-period 30s, enable-scale-to-zero true,
  min-scale 0, max-scale 0 (unbounded), activation-scale 1, scale-down-delay 0s.
- pkg/autoscaler/config/config.go: TickInterval 2 s (decision period).
- pkg/autoscaler/scaling/autoscaler.go (Scale): dspc = ceil(stable / (target x util)),
  dppc = ceil(panic / (target x util)); both clamped to [floor(ready / maxDown), ceil(maxUp x ready)]
  with ready = max(1, ready pods); panic starts when dppc / ready >= 2.0 and ends a stable window
  after the last time it was over the threshold; in panic: max(stable, panic) and never below
  the highest count reached during the panic. No data -> no decision. Starts in panic when the
  revision already has > 1 ready pod (keeps scale until it has data).
- pkg/reconciler/autoscaling/kpa/scaler.go: 0 only after the scale-to-zero grace period.

Metric: Knative's queue-proxy counts in-flight requests per pod (queued + being served), so the
observed concurrency is running + waiting, plus the requests the activator holds while no pod is
ready (`Observation.held_requests`, the router's gauge). The KPA reads these statistics straight
from the pods every second; run it with direct 1 s sensing to give it that.
Target: the documented default, 100 in-flight requests per pod (container-concurrency-target-default;
KServe, which deploys vLLM on Knative, leaves it there unless the InferenceService sets
`scaleTarget`), times the 70 % utilisation. `target_concurrency` overrides it (bench/policies.py
sweeps it); `target_concurrency=None` takes the pod's `max_num_seqs`.
"""
from __future__ import annotations

import math

from pydantic import Field

from autoscaler.policy._common import PolicyConfig, TimeWindow, clean, is_stale
from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.types import Decision, Observation, Reason, Signal

__all__ = ["KnativeConfig", "KnativePolicy"]


class KnativeConfig(PolicyConfig):
    target_concurrency: float | None = Field(100.0, gt=0.0)   # None: capacity.max_num_seqs
    target_utilization: float = Field(0.7, gt=0.0, le=1.0)
    stable_window_s: float = Field(60.0, ge=6.0, le=3600.0)
    panic_window_pct: float = Field(10.0, ge=1.0, le=100.0)
    panic_threshold_pct: float = Field(200.0, ge=110.0, le=1000.0)
    max_scale_up_rate: float = Field(1000.0, gt=1.0)
    max_scale_down_rate: float = Field(2.0, gt=1.0)
    scale_to_zero_grace_s: float = Field(30.0, ge=0.0)
    activation_scale: int = Field(1, ge=1)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1000, ge=1)
    tick_s: float = Field(2.0, gt=0.0)
    staleness_s: float = Field(60.0, gt=0.0)


class _KnState:
    __slots__ = ("win", "panic_t", "max_panic", "zero_since", "started")

    def __init__(self, cfg: KnativeConfig) -> None:
        self.win = TimeWindow(cfg.stable_window_s)
        self.panic_t: float | None = None
        self.max_panic = 0
        self.zero_since: float | None = None
        self.started = False


class KnativePolicy:
    name = "knative"

    def __init__(self, capacity: ReplicaCapacity, config: KnativeConfig | None = None) -> None:
        self.capacity = capacity
        self.config = config or KnativeConfig()
        self.interval_s = self.config.tick_s
        tc = self.config.target_concurrency
        tc = float(capacity.max_num_seqs) if tc is None else tc
        self.target_value = tc * self.config.target_utilization
        self.panic_window_s = self.config.stable_window_s * self.config.panic_window_pct / 100.0
        self._states: dict[str, _KnState] = {}

    def decide(self, obs: Observation) -> Decision:
        cfg = self.config
        st = self._states.get(obs.model)
        if st is None:
            st = self._states[obs.model] = _KnState(cfg)
        t = float(obs.time)
        ready = max(0, int(obs.ready_replicas))
        cur = ready + max(0, int(obs.loading_replicas))
        if not st.started:
            st.started = True
            if ready > 1:   # "we always start in panic mode if the deployment has > 1 pod"
                st.panic_t, st.max_panic = t, ready
        w = clean(obs.waiting_requests)
        r = clean(obs.running_requests)
        stale = is_stale(t, obs.metrics_time, cfg.staleness_s)
        if (w is None and r is None) or (r is None and ready > 0):
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_MISSING, Signal.CONCURRENCY,
                            "no concurrency data: no scaling decision")
        if stale:
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_STALE, Signal.CONCURRENCY,
                            "concurrency data stale")
        conc = (r or 0.0) + (w or 0.0) + (clean(obs.held_requests) or 0.0)
        st.win.add(t, conc)
        stable = st.win.mean_since(t - cfg.stable_window_s)
        panic_v = st.win.mean_since(t - self.panic_window_s)
        rp = float(max(1, ready))
        max_up = math.ceil(cfg.max_scale_up_rate * rp)
        max_down = math.floor(rp / cfg.max_scale_down_rate)
        dspc = math.ceil(stable / self.target_value - 1e-12)
        dppc = math.ceil(panic_v / self.target_value - 1e-12)
        d_stable = int(min(max(dspc, max_down), max_up))
        d_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / rp >= cfg.panic_threshold_pct / 100.0
        if over:
            st.panic_t = t
        elif st.panic_t is not None and st.panic_t + cfg.stable_window_s < t:
            st.panic_t, st.max_panic = None, 0
        desired = d_stable
        reason_up = Reason.SCALE_UP_STABLE
        if st.panic_t is not None:
            if desired < d_panic:
                desired = d_panic
            reason_up = Reason.SCALE_UP_PANIC
            if desired > st.max_panic:
                st.max_panic = desired
            desired = st.max_panic
        if desired > 0 and cur == 0:
            desired = max(desired, cfg.activation_scale)
        detail = (f"concurrency stable {stable:.1f} panic {panic_v:.1f} / target {self.target_value:.1f}"
                  f" -> {dspc}/{dppc} (ready {ready}){' panic' if st.panic_t is not None else ''}")
        if desired == 0 and cur > 0:
            if cfg.min_replicas == 0:
                if st.zero_since is None:
                    st.zero_since = t
                if t - st.zero_since < cfg.scale_to_zero_grace_s:
                    return Decision(obs.model, t, cur, cur, Reason.HOLD_IDLE_GRACE, Signal.CONCURRENCY,
                                    f"{detail}; scale-to-zero grace {t - st.zero_since:.0f}/{cfg.scale_to_zero_grace_s:g}s")
        else:
            st.zero_since = None
        if cur == 0 and desired > 0:
            reason = Reason.ACTIVATE_FROM_ZERO
        elif desired > cur:
            reason = reason_up
        elif desired < cur:
            reason = Reason.SCALE_TO_ZERO if desired == 0 else (
                Reason.RATE_LIMITED_DOWN if desired == max_down and dspc < max_down else Reason.SCALE_DOWN_STABLE)
        else:
            reason = Reason.HOLD_PANIC if (st.panic_t is not None and max(dspc, dppc) < cur) else (
                Reason.HOLD_AT_ZERO if cur == 0 else Reason.HOLD_STEADY)
        if desired > cfg.max_replicas:
            desired, reason = cfg.max_replicas, Reason.BOUNDED_MAX
        elif desired < cfg.min_replicas:
            desired, reason = cfg.min_replicas, Reason.BOUNDED_MIN
        return Decision(obs.model, t, cur, desired, reason, Signal.CONCURRENCY, detail)
