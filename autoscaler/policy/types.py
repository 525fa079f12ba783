"""The policy interface: what every autoscaling policy reads and what it answers.

Frozen contract shared by the simulator (`autoscaler/sim`), the live controller and the local
mode. Everything here is plain data: no I/O, no clock reads. Time is always passed in by the
caller (`Observation.time`), in seconds on the caller's clock (virtual in the simulator).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from forecasting.types import DemandForecast, ReplicaFloor

__all__ = [
    "DemandForecast",
    "ReplicaFloor",
    "Observation",
    "Reason",
    "Signal",
    "Decision",
    "Policy",
]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the caller knows about one model's fleet at `time`.

    Metric fields are `None` when the caller could not get them (scrape failed, no ready
    replica to scrape, ...). A policy must never shrink a fleet on missing or stale data.
    """

    model: str
    time: float                       # seconds on the caller's clock (virtual in the simulator)
    ready_replicas: int
    loading_replicas: int             # started but not Ready yet (cold start in progress)
    waiting_requests: float | None    # sum of vllm:num_requests_waiting over ready replicas; None = missing
    running_requests: float | None    # sum of vllm:num_requests_running over ready replicas
    kv_cache_usage: float | None      # mean over ready replicas, 0..1 (vllm:kv_cache_usage_perc)
    request_rate: float | None        # arrivals per second over the last scrape window
    prompt_token_rate: float | None   # prompt tokens per second (rate of vllm:prompt_tokens_total)
    generation_token_rate: float | None  # generated tokens per second (rate of vllm:generation_tokens_total)
    ttft_p95: float | None = None     # seconds
    cpu_utilization: float | None = None   # 0..1, mean over ready replicas (HPA baseline only)
    metrics_time: float | None = None      # when the metrics were sampled; None = same as time
    forecast: DemandForecast | None = None
    floor: ReplicaFloor | None = None      # pre-warm floor from forecasting's planner or an override

    @property
    def current(self) -> int:
        """Replicas the fleet has or is bringing up: ready + loading."""
        return self.ready_replicas + self.loading_replicas


class Reason(StrEnum):
    """Machine-readable reason for a decision (stable strings: dashboards and tests key on them)."""

    # growing
    SCALE_UP_STABLE = "scale_up_stable"          # stable-window demand above current capacity
    SCALE_UP_PANIC = "scale_up_panic"            # panic-window demand (burst / queue growth)
    SCALE_UP_FORECAST = "scale_up_forecast"      # demand predicted at now + cold start (trend or forecast)
    ACTIVATE_FROM_ZERO = "activate_from_zero"    # 0 -> >=1 on the first queued request or arrival
    FORECAST_FLOOR = "forecast_floor"            # raised to obs.floor (pre-warm planner / override)
    # shrinking
    SCALE_DOWN_STABLE = "scale_down_stable"      # stable-window demand below capacity
    SCALE_TO_ZERO = "scale_to_zero"              # idle for the grace period, min_replicas == 0
    # holding
    HOLD_STEADY = "hold_steady"                  # demand matches current
    HOLD_TOLERANCE = "hold_tolerance"            # change within the tolerance band
    HOLD_PANIC = "hold_panic"                    # in panic mode: never scale down
    HOLD_STABILIZATION = "hold_stabilization"    # scale-down held by the stabilisation / stable window
    HOLD_LOADING = "hold_loading"                # replicas already loading cover the demand
    HOLD_IDLE_GRACE = "hold_idle_grace"          # idle, but the scale-to-zero grace has not run out
    HOLD_AT_ZERO = "hold_at_zero"                # at zero and no demand
    HOLD_FAIL_STATIC_MISSING = "hold_fail_static_missing"  # would shrink, but a metric is missing / NaN
    HOLD_FAIL_STATIC_STALE = "hold_fail_static_stale"      # would shrink, but metrics are stale
    # bounding
    BOUNDED_MAX = "bounded_max"                  # clipped to max_replicas
    BOUNDED_MIN = "bounded_min"                  # raised to min_replicas
    RATE_LIMITED_UP = "rate_limited_up"          # clipped by the max scale-up rate
    RATE_LIMITED_DOWN = "rate_limited_down"      # clipped by the max scale-down rate
    COOLDOWN = "cooldown"                        # change suppressed by a cooldown
    STATIC = "static"                            # static provisioning: fixed count


class Signal(StrEnum):
    """Which signal drove a decision (`Decision.signal`). A plain `str` is accepted too."""

    KV_TOKENS = "kv_tokens"
    TOKEN_THROUGHPUT = "token_throughput"
    QUEUE = "queue"
    CONCURRENCY = "concurrency"
    REQUEST_RATE = "request_rate"
    CPU = "cpu"
    FORECAST = "forecast"
    FLOOR = "floor"
    TREND = "trend"
    BURST = "burst"
    BOUNDS = "bounds"
    IDLE = "idle"
    NONE = "none"
    STATIC = "static"


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer for one model at one time."""

    model: str
    time: float
    current: int           # ready + loading at decision time
    desired: int           # replicas the caller should have (ready + loading)
    reason: Reason
    signal: str            # which signal drove it, e.g. "kv_tokens", "token_throughput", "queue", "concurrency", "cpu", "forecast"
    detail: str = ""       # one short human line with the numbers
    floor_from_forecast: int | None = None

    @property
    def delta(self) -> int:
        return self.desired - self.current


@runtime_checkable
class Policy(Protocol):
    """An autoscaling policy. Stateful objects are fine (windows, cooldowns), but one instance
    holds the state of every model it is asked about, keyed by `Observation.model`, and never
    reads a clock: time comes only from `Observation.time`."""

    name: str
    interval_s: float      # how often the caller should call decide() (its published loop period)

    def decide(self, obs: Observation) -> Decision: ...
