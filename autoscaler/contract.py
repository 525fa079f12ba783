"""The plain data every room of warmscale shares. Imports nothing of the project.

Policy, simulator, sensors, controller, local mode, router, API and forecasting all speak these
types. Time is always passed in, in seconds on the caller's clock (virtual in the simulator).

- Observation / Decision / Reason / Signal: what a policy reads and answers.
- DecisionExplain: the numbers behind a decision, structured (status, API, tests read these).
- DemandForecast / ReplicaFloor: what forecasting hands the policy.
- OverrideSpec: an operator's override as the policy's overrides stage applies it.
- Metric names: vLLM's (read by the sensors) and the router's (exported by the router).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Observation", "Decision", "DecisionExplain", "Reason", "Signal", "Policy",
    "DemandForecast", "ReplicaFloor", "OverrideKind", "OverrideSpec",
]


# --------------------------------------------------------------------------- metric names
# vLLM's Prometheus metric names. Source: vllm-project/vllm docs/design/metrics.md and
# vllm/v1/metrics/loggers.py. Every vLLM series carries a `model_name` label.
# `vllm:gpu_cache_usage_perc` was renamed `vllm:kv_cache_usage_perc` and removed in 0.12; readers
# fall back to the old name for older engines.
MODEL_LABEL = "model_name"
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_USAGE_LEGACY = "vllm:gpu_cache_usage_perc"
NUM_PREEMPTIONS = "vllm:num_preemptions_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"            # counted at prefill, not at arrival
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"        # finished requests, not arrivals
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"

# warmscale's router (autoscaler/router): the demand signal vLLM does not have. vLLM counts a
# request only once admitted (prompt tokens at prefill, success at the end); the router counts it
# when it arrives, including requests it holds while a model scales from zero. A gateway in a
# cluster that exports the same names feeds the controller the same signal.
ROUTER_MODEL_LABEL = "model"
ROUTER_ARRIVALS = "warmscale_router_arrivals_total"           # counter, per model
ROUTER_HELD_REQUESTS = "warmscale_router_held_requests"       # gauge: held now, waiting for an engine
ROUTER_HOLD_SECONDS = "warmscale_router_hold_seconds"         # histogram: how long requests were held
ROUTER_REJECTED = "warmscale_router_rejected_total"           # counter: 503s past the hold bound


def _series(metric: str, selector: str) -> str:
    """`metric{selector}`; `selector` is PromQL label matchers without braces (may be empty)."""
    return f"{metric}{{{selector}}}" if selector else metric


def request_rate_query(window: str = "1m", by: str = MODEL_LABEL, selector: str = "") -> str:
    """PromQL: finished requests per second, per model (`selector`: label matchers, e.g. 'model_name="m"')."""
    return f"sum by ({by}) (rate({_series(REQUEST_SUCCESS, selector)}[{window}]))"


def token_rate_query(counter: str, window: str = "1m", by: str = MODEL_LABEL, selector: str = "") -> str:
    """PromQL: prompt or generation tokens per second, per model."""
    return f"sum by ({by}) (rate({_series(counter, selector)}[{window}]))"


def arrival_rate_query(window: str = "1m", by: str = ROUTER_MODEL_LABEL, selector: str = "") -> str:
    """PromQL: requests arriving at the router per second, per model."""
    return f"sum by ({by}) (rate({_series(ROUTER_ARRIVALS, selector)}[{window}]))"


# --------------------------------------------------------------------------- forecasting
@dataclass(frozen=True, slots=True)
class DemandForecast:
    """Predicted demand for one model at `target_time` (seconds), made at `made_at`.

    Rates are per second. `p50`/`p90` are quantiles of the request rate; token rates are the
    P90 of prompt and generated tokens per second, or None where the forecaster does not model them.
    """

    model: str
    made_at: float
    target_time: float
    request_rate_p50: float
    request_rate_p90: float
    prompt_tokens_p90: float | None = None
    generation_tokens_p90: float | None = None
    method: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaFloor:
    """A lower bound on replicas that the pre-warm planner asks the policy to respect until `expires_at`."""

    model: str
    replicas: int
    expires_at: float
    reason: str


# --------------------------------------------------------------------------- overrides
class OverrideKind(StrEnum):
    """What an operator's override does in the overrides stage (after the policy's normaliser)."""

    PIN = "pin"                  # desired = replicas, whatever the policy says
    BOUNDS = "bounds"            # clamp desired to [min_replicas, max_replicas] (either may be None)
    PAUSE = "pause"              # hold the current count
    PAUSE_UP = "pause_up"        # never grow (shrinking still allowed)
    PAUSE_DOWN = "pause_down"    # never shrink (growing still allowed)
    PREWARM = "prewarm"          # at least `replicas` until it expires


@dataclass(frozen=True, slots=True)
class OverrideSpec:
    """One active override for one model, as the overrides stage sees it (already resolved: a
    scheduled override appears here only while its window is open). Times in seconds on the
    caller's clock."""

    name: str
    kind: OverrideKind
    expires_at: float
    reason: str
    author: str
    replicas: int | None = None          # pin, prewarm
    min_replicas: int | None = None      # bounds
    max_replicas: int | None = None      # bounds
    created_at: float = 0.0


# --------------------------------------------------------------------------- policy contract
@dataclass(frozen=True, slots=True)
class Observation:
    """What the caller knows about one model's fleet at `time`.

    Metric fields are `None` when the caller could not get them (scrape failed, no ready
    replica to scrape, ...). A policy must never shrink a fleet on missing or stale data.
    Each field comes from a metric that exists in production (names above).
    """

    model: str
    time: float                       # seconds on the caller's clock (virtual in the simulator)
    ready_replicas: int
    loading_replicas: int             # started but not Ready yet (cold start in progress)
    waiting_requests: float | None    # sum of vllm:num_requests_waiting over ready replicas; None = missing
    running_requests: float | None    # sum of vllm:num_requests_running over ready replicas
    kv_cache_usage: float | None      # mean over ready replicas, 0..1 (vllm:kv_cache_usage_perc)
    request_rate: float | None        # finished requests per second (rate of vllm:request_success_total)
    prompt_token_rate: float | None   # prompt tokens per second, counted at prefill (vllm:prompt_tokens_total)
    generation_token_rate: float | None  # generated tokens per second (rate of vllm:generation_tokens_total)
    ttft_p95: float | None = None     # seconds
    cpu_utilization: float | None = None   # 0..1, mean over ready replicas (HPA baseline only)
    metrics_time: float | None = None      # when the metrics were sampled; None = same as time
    forecast: DemandForecast | None = None
    floor: ReplicaFloor | None = None      # pre-warm floor from forecasting's planner
    arrival_rate: float | None = None      # requests arriving per second at the router (None: no router)
    held_requests: float | None = None     # requests the router holds, waiting for an engine (None: no router)

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
    FORECAST_FLOOR = "forecast_floor"            # raised to obs.floor (pre-warm planner)
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
    # operator overrides (the overrides stage, after the policy)
    OVERRIDE_PIN = "override_pin"
    OVERRIDE_BOUNDS = "override_bounds"
    OVERRIDE_PAUSE = "override_pause"
    OVERRIDE_PREWARM = "override_prewarm"


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
    OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class DecisionExplain:
    """The numbers behind a decision, structured: what status, the API and tests read.

    `need` maps a signal name to the replicas it asks for (at target utilisation); absent = not
    known this tick. `limits` lists, in order, the normaliser and override steps that changed the
    count (e.g. "rate_limited_up", "bounded_max", "override_pin")."""

    need: dict[str, float] = field(default_factory=dict)
    raw_desired: int | None = None        # the calculator's count, before the normaliser
    lead_s: float | None = None
    panic: bool = False
    headroom: float = 1.0
    limits: tuple[str, ...] = ()
    override: str | None = None           # name of the override that decided, if any
    missing: tuple[str, ...] = ()         # metrics missing this tick
    stale: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"need": dict(self.need), "raw_desired": self.raw_desired, "lead_s": self.lead_s,
                "panic": self.panic, "headroom": self.headroom, "limits": list(self.limits),
                "override": self.override, "missing": list(self.missing), "stale": self.stale}


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer for one model at one time."""

    model: str
    time: float
    current: int           # ready + loading at decision time
    desired: int           # replicas the caller should have (ready + loading)
    reason: Reason
    signal: str            # which signal drove it (a Signal value)
    detail: str = ""       # one short human line with the numbers
    floor_from_forecast: int | None = None
    explain: DecisionExplain | None = None

    @property
    def delta(self) -> int:
        return self.desired - self.current


@runtime_checkable
class Policy(Protocol):
    """An autoscaling policy for ONE model: made per model by `make_policy` with that model's
    config, never reads a clock (time comes only from `Observation.time`). Its state survives a
    controller restart through `snapshot()` (JSON-serialisable dict) and `restore()`."""

    name: str
    interval_s: float      # how often the caller should call decide() (its published loop period)

    def decide(self, obs: Observation) -> Decision: ...
