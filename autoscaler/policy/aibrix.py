"""Baseline: AIBrix's KPA (Knative-style stable/panic windows) as AIBrix ships it.

Sources (vllm-project/aibrix):
- pkg/controller/podautoscaler/algorithm/kpa.go (ComputeTargetReplicas): dspc =
  ceil(stable / target), dppc = ceil(panic / target), clamped to [floor(ready / maxDown),
  max(1, ceil(maxUp x ready))]; in panic mode desired = max(stable, panic). (The shipped base
  scaling context does not keep MaxPanicPods, so the "never scale down in panic" hold does not
  persist between loops; modelled as shipped.)
- pkg/controller/podautoscaler/algorithm/engine.go (shouldEnterPanicMode): panic when
  panic / stable > PanicThreshold (or stable <= 0).
- pkg/controller/podautoscaler/context/context.go defaults: MaxScaleUpRate 2, MaxScaleDownRate 2,
  Up/DownFluctuationTolerance 0.1, ScaleUpCooldownWindow 0 s, ScaleDownCooldownWindow 300 s,
  PanicThreshold 2.0, PanicWindow 60 s, StableWindow 180 s; reconcile loop 10 s.
- The down cooldown is modelled as the Kubernetes HPA scale-down stabilisation window (max of
  the recommendations over 300 s), which is how AIBrix itself maps ScaleDownCooldownWindow when
  it renders an HPA (hpa_resources.go buildHPABehavior).
- Tolerance: no change while the per-pod metric is within +-10 % of the target.
- Metric and target: samples/autoscaling/kpa.yaml scales vLLM on `gpu_cache_usage_perc`
  (now `vllm:kv_cache_usage_perc`, 0..1) with targetValue 0.5 per pod; the metric summed over
  ready pods is kv_cache_usage x ready. The target is a fraction of each replica's KV cache, so
  it is capacity-relative already (`target_value` overrides it).
- minReplicas 1 as in the sample; ScaleToZero is false by default, so it never scales from zero.
"""
from __future__ import annotations

import math

from pydantic import Field, model_validator

from autoscaler.policy._common import HpaStabilizer, PolicyConfig, TimeWindow, clean, is_stale
from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.types import Decision, Observation, Reason, Signal

__all__ = ["AibrixConfig", "AibrixPolicy"]


class AibrixConfig(PolicyConfig):
    target_value: float = Field(0.5, gt=0.0)          # kv_cache_usage per pod
    stable_window_s: float = Field(180.0, gt=0.0)
    panic_window_s: float = Field(60.0, gt=0.0)
    panic_threshold: float = Field(2.0, gt=1.0)
    max_scale_up_rate: float = Field(2.0, ge=1.0)
    max_scale_down_rate: float = Field(2.0, ge=1.0)
    up_tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    down_tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    scale_up_cooldown_s: float = Field(0.0, ge=0.0)
    scale_down_cooldown_s: float = Field(300.0, ge=0.0)
    interval_s: float = Field(10.0, gt=0.0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1000, ge=1)
    staleness_s: float = Field(60.0, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> "AibrixConfig":
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(f"panic_window_s ({self.panic_window_s}) must be <= stable_window_s ({self.stable_window_s})")
        return self


class _AbState:
    __slots__ = ("win", "stab")

    def __init__(self, cfg: AibrixConfig) -> None:
        self.win = TimeWindow(cfg.stable_window_s)
        # only the stabilisation windows are used (rates are applied by the KPA clamp)
        self.stab = HpaStabilizer(up_window_s=cfg.scale_up_cooldown_s, down_window_s=cfg.scale_down_cooldown_s,
                                  up_percent=1e9, up_pods=10**9, up_period_s=1.0,
                                  down_percent=100.0, down_period_s=1.0)


class AibrixPolicy:
    name = "aibrix"

    def __init__(self, capacity: ReplicaCapacity, config: AibrixConfig | None = None) -> None:
        self.capacity = capacity
        self.config = config or AibrixConfig()
        self.interval_s = self.config.interval_s
        self._states: dict[str, _AbState] = {}

    def decide(self, obs: Observation) -> Decision:
        cfg = self.config
        st = self._states.get(obs.model)
        if st is None:
            st = self._states[obs.model] = _AbState(cfg)
        t = float(obs.time)
        ready = max(0, int(obs.ready_replicas))
        cur = ready + max(0, int(obs.loading_replicas))
        kv = clean(obs.kv_cache_usage)
        if cur == 0:
            return Decision(obs.model, t, 0, min(cfg.min_replicas, cfg.max_replicas),
                            Reason.BOUNDED_MIN if cfg.min_replicas > 0 else Reason.HOLD_AT_ZERO,
                            Signal.KV_TOKENS, "no pod to read kv_cache_usage from")
        if kv is None or ready == 0:
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_MISSING, Signal.KV_TOKENS,
                            "kv_cache_usage missing: no scaling")
        if is_stale(t, obs.metrics_time, cfg.staleness_s):
            return Decision(obs.model, t, cur, cur, Reason.HOLD_FAIL_STATIC_STALE, Signal.KV_TOKENS, "metric stale")
        total = min(kv, 1.0) * ready
        st.win.add(t, total)
        stable = st.win.mean_since(t - cfg.stable_window_s)
        panic_v = st.win.mean_since(t - cfg.panic_window_s)
        in_panic = stable <= 0.0 or panic_v / stable > cfg.panic_threshold
        rp = float(ready)
        max_up = max(1, math.ceil(cfg.max_scale_up_rate * rp))
        max_down = math.floor(rp / cfg.max_scale_down_rate)
        dspc = math.ceil(stable / cfg.target_value - 1e-12)
        dppc = math.ceil(panic_v / cfg.target_value - 1e-12)
        d_stable = int(min(max(dspc, max_down), max_up))
        d_panic = int(min(max(dppc, max_down), max_up))
        raw = max(d_stable, d_panic) if in_panic else d_stable
        value = panic_v if in_panic else stable
        per_pod = value / rp
        detail = (f"kv total stable {stable:.2f} panic {panic_v:.2f} ({'panic' if in_panic else 'stable'})"
                  f" per pod {per_pod:.2f} / target {cfg.target_value:g}")
        tol_hold = False
        if raw > cur and per_pod <= cfg.target_value * (1.0 + cfg.up_tolerance):
            raw, tol_hold = cur, True
        elif raw < cur and per_pod >= cfg.target_value * (1.0 - cfg.down_tolerance):
            raw, tol_hold = cur, True
        desired = st.stab.stabilize(t, cur, raw)
        if desired > cur:
            reason = Reason.SCALE_UP_PANIC if in_panic else Reason.SCALE_UP_STABLE
            if raw == max_up and max(dspc, dppc) > max_up:
                reason = Reason.RATE_LIMITED_UP
        elif desired < cur:
            reason = Reason.RATE_LIMITED_DOWN if (desired == max_down and dspc < max_down) else Reason.SCALE_DOWN_STABLE
        elif tol_hold:
            reason = Reason.HOLD_TOLERANCE
        elif raw < cur:
            reason = Reason.COOLDOWN
        else:
            reason = Reason.HOLD_STEADY
        if desired > cfg.max_replicas:
            desired, reason = cfg.max_replicas, Reason.BOUNDED_MAX
        elif desired < cfg.min_replicas:
            desired, reason = cfg.min_replicas, Reason.BOUNDED_MIN
        return Decision(obs.model, t, cur, desired, reason, Signal.KV_TOKENS, f"{detail}; raw {raw} -> {desired}")
