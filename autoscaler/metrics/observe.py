"""Observations from successive direct scrapes of a model's Ready pods (and, optionally, its router).

`ObservationBuilder` keeps a short history of samples per pod and answers, at each tick, what
Prometheus would: gauges summed (waiting, running) or averaged (KV usage) over the Ready pods of
the newest scrape round; rates as counter increases over the last `rate_window_s` divided by the
window covered (a counter that goes down restarted from zero, as in PromQL's `rate`); TTFT p95 by
`histogram_quantile` over the bucket increases in the window. `metrics_time` is the newest sample's
time. A Ready pod whose scrape fails keeps its last sample for up to `gauge_max_age_s` (Prometheus
keeps a series' last value through a missed scrape); past that its gauges are unknown. Nothing is
invented: a field the scrapes cannot give is `None`, and `Reading.reasons` says why.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autoscaler.contract import Observation
from autoscaler.metrics.scrape import EngineSample, Histogram

__all__ = ["Reading", "ObservationBuilder", "histogram_quantile", "counter_increase"]

LOAD_FIELDS = ("waiting_requests", "running_requests", "kv_cache_usage", "request_rate", "prompt_token_rate",
               "generation_token_rate", "ttft_p95")


@dataclass(frozen=True, slots=True)
class Reading:
    """A sensor's answer: the Observation plus what is missing, why, and how old the data is."""

    observation: Observation
    missing: tuple[str, ...] = ()      # Observation fields that are None because data is missing
    reasons: tuple[str, ...] = ()      # one line per problem, naming the target or query and the error
    age_s: float | None = None         # observation.time - metrics_time; None when nothing was sampled
    source: str = ""                   # "direct" or "prometheus"

    @property
    def complete(self) -> bool:
        return not self.missing


def counter_increase(values: list[float]) -> float:
    """Increase of a counter over successive samples; a drop means it restarted from zero."""
    total = 0.0
    for prev, cur in zip(values, values[1:]):
        total += cur - prev if cur >= prev else cur
    return total


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative (le, count) buckets, ascending le ending at +Inf.

    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket gives the
    highest finite bound. `None` when the buckets hold no observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def _histogram_increase(samples: list[Histogram]) -> list[tuple[float, float]] | None:
    """Bucket-wise increase over successive histograms of one series (resets handled per bucket)."""
    if len(samples) < 2:
        return None
    les = [le for le, _ in samples[-1].buckets]
    rows = [dict(h.buckets) for h in samples]
    return [(le, counter_increase([r.get(le, 0.0) for r in rows])) for le in les]


@dataclass
class _History:
    samples: deque[EngineSample] = field(default_factory=deque)

    def add(self, sample: EngineSample, keep_s: float) -> None:
        if self.samples and sample.time <= self.samples[-1].time:
            return
        self.samples.append(sample)
        while self.samples and self.samples[0].time < sample.time - keep_s:
            self.samples.popleft()

    def window(self, start: float, end: float) -> list[EngineSample]:
        return [s for s in self.samples if start <= s.time <= end]


def _increase(histories: Mapping[str, _History], start: float, end: float,
              value: Callable[[EngineSample], float | None]) -> tuple[float | None, float]:
    """Summed increase of one counter over [start, end] across series, and the earliest time used."""
    total, earliest, seen = 0.0, end, False
    for history in histories.values():
        points = [(s.time, value(s)) for s in history.window(start, end)]
        points = [(t, v) for t, v in points if v is not None]
        if len(points) < 2:
            continue
        seen = True
        earliest = min(earliest, points[0][0])
        total += counter_increase([v for _, v in points])
    return (total if seen else None), earliest


class ObservationBuilder:
    """Turns scrape rounds of ONE model's Ready pods into Observations (see the module docstring).

    Call `build()` once per tick with that tick's samples; pods come and go freely (a pod's history
    is dropped once it is older than the window)."""

    def __init__(self, model: str, rate_window_s: float = 60.0, gauge_max_age_s: float = 15.0):
        if rate_window_s <= 0:
            raise ValueError(f"rate_window_s must be > 0, got {rate_window_s!r}")
        if gauge_max_age_s < 0:
            raise ValueError(f"gauge_max_age_s must be >= 0, got {gauge_max_age_s!r}")
        self.model = model
        self.rate_window_s = rate_window_s
        self.gauge_max_age_s = gauge_max_age_s
        self._pods: dict[str, _History] = {}
        self._router = _History()

    def _record(self, samples: Mapping[str, EngineSample], router: EngineSample | None) -> None:
        keep = 2 * self.rate_window_s
        for pod, sample in samples.items():
            self._pods.setdefault(pod, _History()).add(sample, keep)
        if router is not None:
            self._router.add(router, keep)
        newest = max((h.samples[-1].time for h in self._pods.values() if h.samples), default=None)
        if newest is not None:
            for pod in [p for p, h in self._pods.items() if h.samples[-1].time < newest - keep]:
                del self._pods[pod]

    def build(self, now: float, samples: Mapping[str, EngineSample], ready_replicas: int, loading_replicas: int,
              router: EngineSample | None = None, errors: Mapping[str, str] | None = None) -> Reading:
        """The Observation at `now` from this round's `samples` (Ready pod -> sample), the Ready and
        loading counts (from the API server), the router's sample if there is a router, and the
        scrape errors of Ready pods that gave no sample (pod -> error text)."""
        self._record(samples, router)
        reasons = [f"pod {pod}: {err}" for pod, err in sorted((errors or {}).items())]
        times = [s.time for s in samples.values()] + ([router.time] if router is not None else [])
        metrics_time = max(times) if times else None
        gauges = self._gauges(now, samples, ready_replicas, reasons, errors or {})
        rates = self._rates(metrics_time, reasons)
        arrival_rate, held = self._router_fields(metrics_time, router)
        obs = Observation(model=self.model, time=now, ready_replicas=ready_replicas,
                          loading_replicas=loading_replicas, metrics_time=metrics_time,
                          arrival_rate=arrival_rate, held_requests=held, **gauges, **rates)
        missing = tuple(f for f in LOAD_FIELDS if getattr(obs, f) is None)
        age = now - metrics_time if metrics_time is not None else None
        return Reading(obs, missing, tuple(reasons), age, "direct")

    def _gauges(self, now: float, samples: Mapping[str, EngineSample], ready: int, reasons: list[str],
                errors: Mapping[str, str]) -> dict:
        if ready == 0:
            # No Ready engine holds any request; KV usage of no engine is undefined.
            return {"waiting_requests": 0.0, "running_requests": 0.0, "kv_cache_usage": None}
        if len(samples) < ready:
            samples = self._stand_ins(now, samples, errors, reasons)
        if len(samples) < ready:
            reasons.append(f"{len(samples)} of {ready} Ready pods scraped: queue, running and KV usage unknown")
            return {"waiting_requests": None, "running_requests": None, "kv_cache_usage": None}
        out = {}
        for name, attr in (("waiting_requests", "waiting"), ("running_requests", "running")):
            values = [getattr(s, attr) for s in samples.values()]
            out[name] = None if None in values else float(sum(values))
        kv = [s.kv_cache_usage for s in samples.values()]
        out["kv_cache_usage"] = None if None in kv else sum(kv) / len(kv)
        for name, value in out.items():
            if value is None:
                reasons.append(f"{name}: a Ready pod's /metrics lacks the series")
        return out

    def _stand_ins(self, now: float, samples: Mapping[str, EngineSample], errors: Mapping[str, str],
                   reasons: list[str]) -> dict[str, EngineSample]:
        """A Ready pod whose scrape failed this round keeps its last sample for up to
        `gauge_max_age_s`, as Prometheus keeps a series' last value through a missed scrape."""
        out = dict(samples)
        for pod in errors:
            history = self._pods.get(pod)
            last = history.samples[-1] if history and history.samples else None
            if pod not in out and last is not None and now - last.time <= self.gauge_max_age_s:
                out[pod] = last
                reasons.append(f"pod {pod}: its sample from {now - last.time:.1f} s ago stands in for this round's")
        return out

    def _rates(self, end: float | None, reasons: list[str]) -> dict:
        none = {"request_rate": None, "prompt_token_rate": None, "generation_token_rate": None, "ttft_p95": None}
        if end is None:
            return none
        start = end - self.rate_window_s
        out = dict(none)
        for name, attr in (("request_rate", "request_success"), ("prompt_token_rate", "prompt_tokens"),
                           ("generation_token_rate", "generation_tokens")):
            increase, earliest = _increase(self._pods, start, end, lambda s, a=attr: getattr(s, a))
            if increase is not None and end > earliest:
                out[name] = increase / (end - earliest)
        if out["request_rate"] is None:
            reasons.append(f"rates need two samples of a pod within {self.rate_window_s:g} s")
        out["ttft_p95"] = self._ttft_p95(start, end)
        return out

    def _ttft_p95(self, start: float, end: float) -> float | None:
        summed: dict[float, float] = {}
        for history in self._pods.values():
            hists = [s.ttft for s in history.window(start, end) if s.ttft is not None]
            for le, inc in _histogram_increase(hists) or ():
                summed[le] = summed.get(le, 0.0) + inc
        return histogram_quantile(0.95, sorted(summed.items()))

    def _router_fields(self, end: float | None, router: EngineSample | None) -> tuple[float | None, float | None]:
        if router is None or end is None:
            return None, None
        increase, earliest = _increase({"router": self._router}, end - self.rate_window_s, end, lambda s: s.arrivals)
        rate = increase / (end - earliest) if increase is not None and end > earliest else None
        return rate, router.held


def policy_rate_window_s(policy: object) -> float:
    """The rate window a policy was configured for (its sizing assumes rates over this window); 60 s
    for a policy that has none."""
    config = getattr(policy, "config", None) or getattr(policy, "cfg", None)
    window = getattr(config, "rate_window_s", None)
    return float(window) if window and window > 0 else 60.0
