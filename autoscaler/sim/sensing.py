"""What the controller can know about a simulated fleet: metrics as production exposes them.

Every Observation field the simulator fills comes from a metric that exists (names in
`autoscaler.contract`):

* vLLM, one series per Ready pod: `vllm:request_success_total` (finished requests, the
  Observation's `request_rate`), `vllm:prompt_tokens_total` (counted when a request's prefill
  completes, not when it arrives), `vllm:generation_tokens_total`, `vllm:num_requests_waiting` and
  `vllm:num_requests_running` as the engine counts them (requests held at the router are in
  neither), `vllm:kv_cache_usage_perc`, the `vllm:time_to_first_token_seconds` histogram, and the
  pod's CPU (what metrics-server gives the HPA).
* The router (`warmscale_router_arrivals_total`, `warmscale_router_held_requests`): arrivals when
  they reach the router and requests it holds while no engine is Ready. Only with `router=True`;
  without it `arrival_rate` and `held_requests` are None, as for a fleet behind a plain Service.

Two ways to read them (`SensingConfig.mode`):

* **prometheus** (the live controller in a cluster): scrapes every `scrape_interval_s` (15 s),
  each at its slot plus up to `jitter_s` (1 s); a scrape of a pod fails with probability
  `miss_rate` (1 %), losing that sample. A query's answer reaches the controller `lag_s` (15 s)
  after the time it was evaluated at (scrape, rule evaluation and adapter caching together).
  Rates are `sum(rate(x[1m]))`: Prometheus' extrapolatedRate per pod series (promql/functions.go:
  extrapolation to the window edges when the nearest sample is within 1.1 average intervals of
  them, else by half an interval; never past the counter's zero), summed; a new pod's series
  counts once it has two samples in the window, a gone pod's while its samples remain in it.
  Gauges are the newest sample of each live series within the 5 min lookback.
* **direct** (local mode, Knative's queue-proxy statistics): every pod's `/metrics` scraped every
  `scrape_interval_s` (1 s), no further lag, the same rate arithmetic on the controller's side.

Given a seed, the jitter and the missed scrapes are the same in every run.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from autoscaler.contract import Observation
from autoscaler.sim.engine import TTFT_BUCKETS

__all__ = ["SensingConfig", "Sensor", "extrapolated_rate", "SENSING_MODES"]

SENSING_MODES = ("prometheus", "direct")
LOOKBACK_S = 300.0   # Prometheus' default lookback delta for instant vectors


@dataclass(frozen=True)
class SensingConfig:
    """How the controller reads the fleet. None fields take the mode's production default."""

    mode: Literal["prometheus", "direct"] = "prometheus"
    router: bool = True                  # warmscale's router (or a gateway exporting its names) is in front
    scrape_interval_s: float | None = None   # prometheus 15 s, direct 1 s
    lag_s: float | None = None               # prometheus 15 s, direct 0 s (the scrape itself is <= 1 s old)
    jitter_s: float | None = None            # prometheus 1 s, direct 0.1 s
    miss_rate: float = 0.01                  # share of pod scrapes that fail
    rate_window_s: float = 60.0              # rate(x[1m])

    def __post_init__(self):
        if self.mode not in SENSING_MODES:
            raise ValueError(f"sensing mode {self.mode!r}: expected one of {', '.join(SENSING_MODES)}")
        for name in ("scrape_interval_s", "lag_s", "jitter_s"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0 or (name == "scrape_interval_s" and v <= 0)):
                raise ValueError(f"sensing {name}: expected a finite number {'> 0' if name == 'scrape_interval_s' else '>= 0'}, got {v!r}")
        if not 0.0 <= self.miss_rate < 1.0:
            raise ValueError(f"sensing miss_rate: expected 0 <= rate < 1, got {self.miss_rate!r}")
        if self.rate_window_s <= 0:
            raise ValueError(f"sensing rate_window_s: expected > 0, got {self.rate_window_s!r}")

    @property
    def interval(self) -> float:
        return self.scrape_interval_s if self.scrape_interval_s is not None else (
            15.0 if self.mode == "prometheus" else 1.0)

    @property
    def lag(self) -> float:
        return self.lag_s if self.lag_s is not None else (15.0 if self.mode == "prometheus" else 0.0)

    @property
    def jitter(self) -> float:
        return self.jitter_s if self.jitter_s is not None else (1.0 if self.mode == "prometheus" else 0.1)

    def describe(self) -> str:
        src = "vLLM + router metrics" if self.router else "vLLM metrics only (no router)"
        return (f"{self.mode} sensing of {src}: scrape every {self.interval:g} s (+ up to {self.jitter:g} s "
                f"jitter), {self.miss_rate:.1%} of pod scrapes missed, answers {self.lag:g} s late, "
                f"rates over {self.rate_window_s:g} s with Prometheus' extrapolation")


def extrapolated_rate(samples, range_start: float, range_end: float) -> float | None:
    """Prometheus' rate() of one counter series over (range_start, range_end] (promql/functions.go
    extrapolatedRate, isCounter and isRate). `samples`: (t, value) in time order inside the range.
    None for fewer than two samples (Prometheus returns no value for the series)."""
    n = len(samples)
    if n < 2:
        return None
    t0, v0 = samples[0]
    t1, v1 = samples[-1]
    result = v1 - v0
    prev = v0
    for _, v in samples:   # counter resets: a drop means the counter restarted from 0
        if v < prev:
            result += prev
        prev = v
    sampled = t1 - t0
    if sampled <= 0:
        return None
    to_start = t0 - range_start
    to_end = range_end - t1
    avg = sampled / (n - 1)
    if result > 0 and v0 >= 0:
        to_zero = sampled * (v0 / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = avg * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg / 2
    interval += to_end if to_end < threshold else avg / 2
    return result * (interval / sampled) / (range_end - range_start)


# sample layout of a pod series
_T, _SUCCESS, _PROMPT, _GEN, _WAITING, _RUNNING, _KV, _BUSY = range(8)


class _Series:
    __slots__ = ("samples", "stale_at")

    def __init__(self) -> None:
        self.samples: deque = deque()
        self.stale_at: float | None = None


class Sensor:
    """The metric pipeline of one model: `scrape` at the simulator's scrape events, `observe` at
    the controller's ticks."""

    def __init__(self, config: SensingConfig, model: str, profile, seed: int = 0) -> None:
        self.config = config
        self.model = model
        self.kv_cap = profile.engine.kv_cache_tokens
        self.cpu = profile.cpu
        self.rng = np.random.default_rng([seed, 0x5e45])
        self.pods: dict[object, _Series] = {}
        self.router: deque = deque()    # (t, arrivals, held)
        self.hist: deque = deque()      # (t, bucket counts): the model's TTFT histogram, summed over pods
        self.keep_s = config.rate_window_s + config.lag + 3 * config.interval + LOOKBACK_S

    # ------------------------------------------------------------------ schedule
    def next_scrape(self, slot: float) -> tuple[float, float]:
        """(next slot, time the scrape in that slot happens)."""
        nxt = slot + self.config.interval
        return nxt, nxt + (self.rng.random() * self.config.jitter if self.config.jitter > 0 else 0.0)

    # ------------------------------------------------------------------ scrape
    def scrape(self, t: float, ready: list, arrivals: int, held: int, hist: list[int]) -> None:
        miss = self.config.miss_rate
        live = set()
        for r in ready:
            live.add(r)
            s = self.pods.get(r)
            if s is None:
                s = self.pods[r] = _Series()
            if miss and self.rng.random() < miss:
                continue
            s.samples.append((t, r.completed, r.prompt_tokens_done, r.gen_tokens, len(r.waiting), len(r.admitted),
                              r.kv_used() / self.kv_cap, r.busy_s))
        for r, s in list(self.pods.items()):
            if r not in live and s.stale_at is None:
                s.stale_at = t   # the pod left: Prometheus marks the series stale at this scrape
            cut = t - self.keep_s
            while s.samples and s.samples[0][_T] < cut:
                s.samples.popleft()
            if not s.samples and s.stale_at is not None:
                del self.pods[r]
        if not (miss and self.rng.random() < miss):
            self.router.append((t, arrivals, held))
            self.hist.append((t, tuple(hist)))
        cut = t - self.keep_s
        while len(self.router) > 2 and self.router[0][0] < cut:
            self.router.popleft()
        while len(self.hist) > 2 and self.hist[0][0] < cut:
            self.hist.popleft()

    # ------------------------------------------------------------------ query
    def observe(self, t: float, ready: int, loading: int) -> Observation:
        cfg = self.config
        te = t - cfg.lag                       # when the answer the controller has now was evaluated
        w0 = te - cfg.rate_window_s
        rates = [0.0, 0.0, 0.0]
        have_rate = False
        gauges = [0.0, 0.0, 0.0]
        live = 0
        cpu_sum = 0.0
        cpu_n = 0
        newest = None
        for s in self.pods.values():
            window = [x for x in s.samples if w0 < x[_T] <= te]
            for k, col in enumerate((_SUCCESS, _PROMPT, _GEN)):
                v = extrapolated_rate([(x[_T], x[col]) for x in window], w0, te)
                if v is not None:
                    rates[k] += v
                    have_rate = True
            if s.stale_at is not None and s.stale_at <= te:
                continue
            last = prev = None
            for x in reversed(s.samples):
                if x[_T] <= te:
                    if last is None:
                        last = x
                    else:
                        prev = x
                        break
            if last is None or last[_T] < te - LOOKBACK_S:
                continue
            live += 1
            gauges[0] += last[_WAITING]
            gauges[1] += last[_RUNNING]
            gauges[2] += last[_KV]
            newest = last[_T] if newest is None else max(newest, last[_T])
            if prev is not None and last[_T] > prev[_T]:
                cpu_sum += self.cpu.utilization((last[_BUSY] - prev[_BUSY]) / (last[_T] - prev[_T]))
                cpu_n += 1
        arrival_rate = held = None
        if cfg.router:
            window = [(x[0], x[1]) for x in self.router if w0 < x[0] <= te]
            arrival_rate = extrapolated_rate(window, w0, te)
            last_r = next((x for x in reversed(self.router) if x[0] <= te), None)
            if last_r is not None and last_r[0] >= te - LOOKBACK_S:
                held = float(last_r[2])
                newest = last_r[0] if newest is None else max(newest, last_r[0])
        ttft95 = self._ttft_p95(w0, te)
        if live:
            waiting, running, kv = gauges[0], gauges[1], gauges[2] / live
        elif ready == 0:
            waiting, running, kv = 0.0, 0.0, None   # no pod to scrape: nothing waits in an engine
        else:
            waiting = running = kv = None           # pods exist but no sample reached us
        req, ptok, gtok = (rates if have_rate else (None, None, None))
        if not have_rate and ready == 0 and live == 0:
            req, ptok, gtok = 0.0, 0.0, 0.0
        return Observation(
            model=self.model, time=t, ready_replicas=ready, loading_replicas=loading,
            waiting_requests=waiting, running_requests=running, kv_cache_usage=kv,
            request_rate=req, prompt_token_rate=ptok, generation_token_rate=gtok, ttft_p95=ttft95,
            cpu_utilization=cpu_sum / cpu_n if cpu_n else None, metrics_time=newest,
            arrival_rate=arrival_rate, held_requests=held)

    def _ttft_p95(self, w0: float, te: float) -> float | None:
        window = [x for x in self.hist if w0 < x[0] <= te]
        if len(window) < 2:
            return None
        return hist_quantile(0.95, [a - b for a, b in zip(window[-1][1], window[0][1])])


def hist_quantile(q: float, counts: list[int]) -> float | None:
    """Prometheus histogram_quantile over vLLM's TTFT buckets (linear within a bucket)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cum = 0
    lo = 0.0
    for i, c in enumerate(counts):
        hi = TTFT_BUCKETS[i] if i < len(TTFT_BUCKETS) else TTFT_BUCKETS[-1]
        if cum + c >= rank and c > 0:
            if i >= len(TTFT_BUCKETS):
                return TTFT_BUCKETS[-1]
            return lo + (hi - lo) * (rank - cum) / c
        cum += c
        lo = hi
    return TTFT_BUCKETS[-1]
