"""warmscale's calculator: the replicas each signal asks for. Pure functions of their arguments.

Every need is "replicas at target utilisation" (load / (per-replica capacity x u), u already
divided by the SLO headroom where it applies). The caller (WarmscalePolicy.decide) feeds them
the learned state (tokens per request, headroom, windows) and the normaliser turns the result
into a replica count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from autoscaler.contract import DemandForecast, Observation, ReplicaFloor, Signal
from autoscaler.policy._common import ceil_eps, clean, is_stale, lsq_slope, max_opt
from autoscaler.policy.capacity import ReplicaCapacity

if TYPE_CHECKING:
    from autoscaler.policy.warmscale import WarmscaleConfig

__all__ = ["RATE_FIELDS", "Inputs", "read_observation", "busy_fraction", "kv_need", "concurrency_need",
           "state_need", "forecast_need", "floor_replicas", "trend_need", "panic_triggers", "UpNeed",
           "up_need", "is_idle"]

# the metrics whose absence keeps the fleet from shrinking (fail-static)
RATE_FIELDS = ("waiting_requests", "running_requests", "kv_cache_usage", "request_rate",
               "prompt_token_rate", "generation_token_rate")


@dataclass(frozen=True, slots=True)
class Inputs:
    """One Observation, cleaned: bad values (None, NaN, negative) are None."""

    model: str
    t: float
    ready: int
    loading: int
    waiting: float | None        # queued in vLLM + held by the router (demand not yet admitted)
    running: float | None
    kv: float | None             # 0..1
    served_rate: float | None    # finished requests per second (learning tokens per request)
    demand_rate: float | None    # arrivals per second when a router counts them, else served_rate
    prompt: float | None         # prompt tokens per second
    gen: float | None            # generated tokens per second
    ttft_p95: float | None
    metrics_time: float | None
    stale: bool
    missing: tuple[str, ...]

    @property
    def cur(self) -> int:
        return self.ready + self.loading

    @property
    def fresh(self) -> bool:
        return not self.stale

    @property
    def sample_t(self) -> float:
        """When the metrics were sampled (the decision time when the caller did not say)."""
        return self.t if self.metrics_time is None else float(self.metrics_time)


def read_observation(obs: Observation, staleness_s: float) -> Inputs:
    W = clean(obs.waiting_requests)
    K = clean(obs.kv_cache_usage)
    if K is not None and K > 1.0:
        K = 1.0
    R, Q = clean(obs.running_requests), clean(obs.request_rate)
    P, G = clean(obs.prompt_token_rate), clean(obs.generation_token_rate)
    held, arrivals = clean(obs.held_requests), clean(obs.arrival_rate)
    ttft = obs.ttft_p95
    if ttft is not None and ttft != ttft:
        ttft = None
    t = float(obs.time)
    return Inputs(
        model=obs.model, t=t, ready=max(0, int(obs.ready_replicas)), loading=max(0, int(obs.loading_replicas)),
        waiting=W if held is None else (held if W is None else W + held), running=R, kv=K,
        served_rate=Q, demand_rate=Q if arrivals is None else arrivals, prompt=P, gen=G, ttft_p95=ttft,
        metrics_time=obs.metrics_time, stale=is_stale(t, obs.metrics_time, staleness_s),
        missing=tuple(n for n, v in zip(RATE_FIELDS, (W, R, K, Q, P, G)) if v is None))


def busy_fraction(inp: Inputs, cap: ReplicaCapacity, mp: float | None, mg: float | None) -> float | None:
    """Rate-based demand in replicas at 100 %: replica-seconds of GPU work per second. The larger
    of the served token rates (capped by capacity once saturated) and arrivals x the learned
    tokens per request (which keeps seeing demand past saturation)."""
    raw: float | None = None
    if inp.prompt is not None and inp.gen is not None:
        raw = inp.prompt / cap.prefill_tokens_per_s + inp.gen / cap.decode_tokens_per_s
    if inp.demand_rate is not None and mp is not None:
        arr = inp.demand_rate * (mp / cap.prefill_tokens_per_s + mg / cap.decode_tokens_per_s)
        if raw is None or arr > raw:
            raw = arr
    return raw


def kv_need(inp: Inputs, cap: ReplicaCapacity, mp: float | None, u: float) -> float | None:
    """KV tokens in use plus the queued prompts' tokens, over one replica's KV cache."""
    if inp.kv is None:
        return None
    kv_tok = inp.kv * inp.ready * cap.kv_cache_tokens
    if inp.waiting is not None and mp is not None:
        kv_tok += inp.waiting * mp
    return kv_tok / (cap.kv_cache_tokens * u)


def concurrency_need(inp: Inputs, cap: ReplicaCapacity, u: float) -> float | None:
    """Running plus waiting requests, over one replica's max_num_seqs."""
    if inp.running is None and inp.waiting is None:
        return None
    return ((inp.running or 0.0) + (inp.waiting or 0.0)) / (cap.max_num_seqs * u)


def state_need(kv: float | None, conc: float | None) -> tuple[float | None, str]:
    """The state-based need (what the fleet holds now) and its signal: the larger of the two."""
    if kv is not None and (conc is None or kv >= conc):
        return kv, Signal.KV_TOKENS
    return conc, Signal.CONCURRENCY


def forecast_need(fc: DemandForecast | None, t: float, interval_s: float, cap: ReplicaCapacity,
                  mp: float | None, mg: float | None, u: float) -> float | None:
    """The P90 forecast in replicas, at the target utilisation (a P90 carries its own margin, so
    the SLO headroom does not scale it). None when there is none, it is past, or it gives only a
    request rate and the tokens per request are not learned yet."""
    if fc is None or fc.target_time < t - interval_s:
        return None
    if fc.prompt_tokens_p90 is not None and fc.generation_tokens_p90 is not None:
        return cap.busy_fraction(max(0.0, fc.prompt_tokens_p90), max(0.0, fc.generation_tokens_p90)) / u
    if mp is not None:
        return max(0.0, fc.request_rate_p90) * (mp / cap.prefill_tokens_per_s + mg / cap.decode_tokens_per_s) / u
    return None


def floor_replicas(floor: ReplicaFloor | None, t: float) -> int | None:
    """The pre-warm planner's floor while it has not expired."""
    if floor is None or floor.expires_at <= t:
        return None
    return max(0, int(floor.replicas))


def trend_need(points: Iterable[tuple[float, float]], n_points: int, rate_pw: float | None, lead_s: float,
               min_span_s: float, max_factor: float) -> float | None:
    """The rate-based need one lead ahead on its least-squares trend: rises only, over at least
    `min_span_s` of history and 3 points, at most `max_factor` x today."""
    if rate_pw is None or n_points < 3:
        return None
    slope, _, span = lsq_slope(points)
    if slope > 0.0 and span >= min_span_s:
        return min(rate_pw + slope * lead_s, rate_pw * max_factor)
    return None


def panic_triggers(inp: Inputs, oldest_waiting: tuple[float, float] | None, inst: float | None,
                   cfg: WarmscaleConfig) -> list[str]:
    """Why the fleet is in panic now (empty: it is not). `oldest_waiting` is the oldest queue
    sample of the panic window, `inst` the instantaneous need."""
    W, cur = inp.waiting, inp.cur
    trig = []
    w_thr = cfg.queue_panic_per_replica * max(inp.ready, 1)
    if W is not None and W >= w_thr:
        if oldest_waiting is None or oldest_waiting[0] >= inp.t or W > oldest_waiting[1]:
            trig.append(f"queue {W:.0f}>={w_thr:.0f} and growing")
    if inst is not None and cur > 0 and inst >= cfg.panic_threshold * cur:
        trig.append(f"need {inst:.1f}>={cfg.panic_threshold:g}x{cur}")
    ttft = inp.ttft_p95
    if cfg.ttft_slo_s is not None and ttft is not None and ttft > cfg.ttft_slo_s and cur > 0:
        trig.append(f"ttft_p95 {ttft:.2f}s>{cfg.ttft_slo_s:g}s")
    return trig


@dataclass(frozen=True, slots=True)
class UpNeed:
    """The calculator's answer: what a scale-up would size for and which signal asks for it."""

    need: float | None           # the largest candidate (None: no signal known)
    signal: str
    rate_up: float | None        # the rate-based part (trend, forecast, instant in panic included)
    state_up: float | None       # the state-based candidate (instant in panic, capped while loading)
    state_signal: str            # its signal: queue in panic with a queue, else kv_tokens / concurrency
    held_by_loading: bool        # the state-based need was capped because replicas are loading


def up_need(rate_pw: float | None, rate_need: float | None, rate_sig: str, trend: float | None,
            fc_need: float | None, state_pw: float | None, state_now: float | None, state_sig: str,
            panic: bool, waiting: float | None, loading: int, cur: int) -> UpNeed:
    """The scale-up need: max of the rate-based candidates (mean, trend, forecast) and the
    state-based one; in panic the instantaneous values count too. While replicas are loading, the
    state-based need (grown by the queue the cold start itself causes) may not order past
    max(current, rate-based need): what is on the way is not ordered again."""
    cands: list[tuple[float, str]] = []
    if rate_pw is not None:
        cands.append((rate_pw, rate_sig))
    if trend is not None and trend > rate_pw * (1.0 + 1e-6) + 1e-9:
        cands.append((trend, Signal.TREND))
    if fc_need is not None:
        cands.append((fc_need, Signal.FORECAST))
    rate_up = max(cands)[0] if cands else None
    st_up = state_pw
    if panic and state_now is not None:
        st_up = max_opt(state_pw, state_now)
        if rate_need is not None:
            cands.append((rate_need, rate_sig))
            rate_up = max_opt(rate_up, rate_need)
    held_by_loading = False
    st_sig = Signal.QUEUE if panic and waiting else state_sig
    if st_up is not None:
        if loading > 0 and rate_up is not None:
            cap_at = max(float(cur), rate_up)
            if st_up > cap_at:
                held_by_loading = ceil_eps(st_up) > cur
                st_up = cap_at
        cands.append((st_up, st_sig))
    need, sig = max(cands) if cands else (None, Signal.NONE)
    return UpNeed(need, sig, rate_up, st_up, st_sig, held_by_loading)


def is_idle(inp: Inputs) -> bool:
    """No arrivals, no queue (held requests included), nothing running."""
    Q, W, R = inp.demand_rate, inp.waiting, inp.running
    return (Q is not None and Q <= 1e-9 and W is not None and W <= 0.0
            and (R is None and inp.ready == 0 or R is not None and R <= 0.0))
