"""The Prometheus sensor: one model's Observation from the PromQL production exposes.

Queries (matchers `S` select the model's series: `model_name="<model>"` by default, or the pod
label selector the caller gives, e.g. `namespace="llm",pod=~"llama-.*"`):

    waiting / running      sum(vllm:num_requests_waiting{S}) / sum(vllm:num_requests_running{S})
    KV usage               avg(vllm:kv_cache_usage_perc{S}) or avg(vllm:gpu_cache_usage_perc{S})
    rates                  contract.request_rate_query / token_rate_query over `rate_window`
    TTFT p95               histogram_quantile(0.95, sum by (le) (rate(..._bucket{S}[window])))
    router                 contract.arrival_rate_query, sum(warmscale_router_held_requests{model=...})
    data age               max(timestamp(vllm:num_requests_waiting{S}))

Prometheus unreachable, an answer that is not a number, or data older than `stale_after_s`: the
load fields are `None` and `Reading.reasons` says which query failed and how, or how old the data is.
The sensor never holds or shrinks anything itself; the policy fails static on what it reports.
`observe_many` reads many models at once: the same fields, each a single query grouped `by` the
model name (and any extra labels the models are narrowed by).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, KV_CACHE_USAGE_LEGACY, MODEL_LABEL,
                                 NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, PROMPT_TOKENS, ROUTER_HELD_REQUESTS,
                                 ROUTER_MODEL_LABEL, TIME_TO_FIRST_TOKEN, Observation, arrival_rate_query,
                                 request_rate_query, token_rate_query)
from autoscaler.metrics.observe import LOAD_FIELDS, Reading

MAX_PARALLEL_QUERIES = 10   # requests keeps 10 connections per host: more would be opened and dropped each tick

__all__ = ["FleetRead", "PrometheusSensor", "fleet_queries", "matchers", "model_queries", "router_queries"]


def matchers(labels: Mapping[str, str]) -> str:
    """PromQL equality matchers for `labels` (values escaped)."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')
    return ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())


def model_queries(model: str, window: str = "1m", selector: str | None = None) -> dict[str, str]:
    """Observation field -> PromQL for one model. `selector`: matchers for its engine series."""
    s = selector if selector is not None else matchers({MODEL_LABEL: model})
    router = matchers({ROUTER_MODEL_LABEL: model})
    return {**_engine_queries(window, selector=s),
            "arrival_rate": arrival_rate_query(window, selector=router),
            "held_requests": f"sum({ROUTER_HELD_REQUESTS}{{{router}}})"}


def fleet_queries(window: str = "1m", by: Sequence[str] = (MODEL_LABEL,)) -> dict[str, str]:
    """Observation field -> PromQL for every model at once, one series per value of the `by`
    labels (the model name first, then any labels a caller narrows its models by)."""
    return _engine_queries(window, by=",".join(by))


def _engine_queries(window: str, selector: str = "", by: str = "") -> dict[str, str]:
    """The engines' fields: over the series `selector` matches, aggregated into one value, or
    into one value per value of the `by` labels."""
    s = f"{{{selector}}}" if selector else ""
    per = f" by ({by})" if by else ""
    rate_by = by or MODEL_LABEL          # the rate queries always group by model; one model sums its one series
    return {
        "metrics_time": f"max{per} (timestamp({NUM_REQUESTS_WAITING}{s}))",
        "waiting_requests": f"sum{per} ({NUM_REQUESTS_WAITING}{s})",
        "running_requests": f"sum{per} ({NUM_REQUESTS_RUNNING}{s})",
        "kv_cache_usage": f"avg{per} ({KV_CACHE_USAGE}{s}) or avg{per} ({KV_CACHE_USAGE_LEGACY}{s})",
        "request_rate": request_rate_query(window, by=rate_by, selector=selector),
        "prompt_token_rate": token_rate_query(PROMPT_TOKENS, window, by=rate_by, selector=selector),
        "generation_token_rate": token_rate_query(GENERATION_TOKENS, window, by=rate_by, selector=selector),
        "ttft_p95": f"histogram_quantile(0.95, sum by ({','.join(filter(None, ('le', by)))}) "
                    f"(rate({TIME_TO_FIRST_TOKEN}_bucket{s}[{window}])))",
    }


def router_queries(window: str = "1m") -> dict[str, str]:
    """The router's fields for every model at once, by its `model` label."""
    return {"arrival_rate": arrival_rate_query(window),
            "held_requests": f"sum by ({ROUTER_MODEL_LABEL}) ({ROUTER_HELD_REQUESTS})"}


@dataclass(frozen=True)
class FleetRead:
    """One model in a batched read: its name, the extra labels its engine series carry (sorted
    `(name, value)` pairs), and its pod counts."""

    model: str
    labels: tuple[tuple[str, str], ...]
    ready_replicas: int
    loading_replicas: int


class QueryFailed(Exception):
    pass


class PrometheusSensor:
    """Reads one model's fleet from Prometheus at `url`. `observe()` returns a `Reading`.

    `stale_after_s`: data older than this (newest sample of the model's queue gauge) is reported
    stale and its load fields are None. `timeout_s` bounds each query; no retries (a tick must not
    wait on a dead Prometheus)."""

    def __init__(self, url: str, rate_window: str = "1m", timeout_s: float = 2.0, stale_after_s: float = 60.0,
                 headers: dict[str, str] | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL must start with http:// or https://, got {url!r}")
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s!r}")
        self.url = url.rstrip("/")
        self.rate_window = rate_window
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self._prom = PrometheusConnect(url=self.url, headers=headers, disable_ssl=True, retry=Retry(total=0))

    def _value(self, query: str) -> float | None:
        values = [v for _, v in self._vector(query) if not math.isnan(v)]
        return sum(values) if values else None

    def _vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        try:
            result = self._prom.custom_query(query, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise QueryFailed(f"Prometheus at {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        except (PrometheusApiClientException, ValueError, KeyError) as exc:
            raise QueryFailed(f"Prometheus at {self.url} rejected {query!r}: {exc}") from exc
        return [(series.get("metric", {}), float(series["value"][1])) for series in result]

    def observe(self, model: str, now: float, ready_replicas: int, loading_replicas: int,
                selector: str | None = None) -> Reading:
        """The Observation at `now` (wall-clock seconds, as Prometheus timestamps are)."""
        queries = model_queries(model, self.rate_window, selector)
        values: dict[str, float | None] = {}
        reasons: list[str] = []
        try:
            for name, query in queries.items():
                values[name] = self._value(query)
        except QueryFailed as exc:
            reasons.append(str(exc))
            values = {}
        return self._reading(model, now, ready_replicas, loading_replicas, values, reasons, queries["waiting_requests"])

    def observe_many(self, reads: Sequence[FleetRead], now: float) -> list[Reading]:
        """Every model's Reading from one query per field (per set of extra label names), not one
        per field per model: a controller of 1,000 models asks Prometheus 10 queries a tick, not 10,000."""
        jobs = {(names, f): (q, (MODEL_LABEL, *names)) for names in {tuple(k for k, _ in r.labels) for r in reads}
                for f, q in fleet_queries(self.rate_window, (MODEL_LABEL, *names)).items()}
        if reads:
            jobs.update({(None, f): (q, (ROUTER_MODEL_LABEL,)) for f, q in router_queries(self.rate_window).items()})
        tables: dict[tuple[str, ...], dict[str, dict[tuple[str, ...], float]]] = {}
        router: dict[str, dict[tuple[str, ...], float]] = {}
        reasons: list[str] = []
        try:
            for (names, f), table in self._tables(jobs).items():
                (router if names is None else tables.setdefault(names, {}))[f] = table
        except QueryFailed as exc:
            reasons.append(str(exc))
        out = []
        for r in reads:
            values: dict[str, float | None] = {}
            if not reasons:
                key = (r.model, *(v for _, v in r.labels))
                table = tables[tuple(k for k, _ in r.labels)]
                values = {f: column.get(key) for f, column in table.items()}
                values.update({f: column.get((r.model,)) for f, column in router.items()})
            described = f"{NUM_REQUESTS_WAITING}{{{matchers({MODEL_LABEL: r.model, **dict(r.labels)})}}}"
            out.append(self._reading(r.model, now, r.ready_replicas, r.loading_replicas, values, list(reasons), described))
        return out

    def _tables(self, jobs: dict) -> dict:
        """Each job's `_table(query, by)`, all in flight at once: a tick waits for the slowest query,
        not for their sum. Raises the first QueryFailed."""
        if not jobs:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(jobs), MAX_PARALLEL_QUERIES)) as pool:
            futures = {key: pool.submit(self._table, query, by) for key, (query, by) in jobs.items()}
            return {key: future.result() for key, future in futures.items()}

    def _table(self, query: str, by: Sequence[str]) -> dict[tuple[str, ...], float]:
        """A query's answer by the values of its `by` labels (NaN, e.g. a quantile of no data, left out)."""
        return {tuple(labels.get(k, "") for k in by): value for labels, value in self._vector(query)
                if not math.isnan(value)}

    def _reading(self, model: str, now: float, ready_replicas: int, loading_replicas: int,
                 values: dict[str, float | None], reasons: list[str], series: str) -> Reading:
        metrics_time = values.pop("metrics_time", None)
        age = now - metrics_time if metrics_time is not None else None
        if values and metrics_time is None and ready_replicas > 0:
            reasons.append(f"Prometheus at {self.url} has no series for {series} "
                           f"though {ready_replicas} pods are Ready")
            values = {}
        elif age is not None and age > self.stale_after_s:
            reasons.append(f"metrics are stale: the newest sample is {age:.0f} s old (limit {self.stale_after_s:g} s)")
            values = {k: None for k in values}
        if values and ready_replicas == 0:
            # No Ready engine holds any request (a vanished pod's last gauges are not load).
            values.update(waiting_requests=0.0, running_requests=0.0)
        obs = Observation(model=model, time=now, ready_replicas=ready_replicas, loading_replicas=loading_replicas,
                          metrics_time=metrics_time, **{f: values.get(f) for f in LOAD_FIELDS},
                          arrival_rate=values.get("arrival_rate"), held_requests=values.get("held_requests"))
        missing = tuple(f for f in LOAD_FIELDS if getattr(obs, f) is None)
        if missing and not reasons:
            reasons.append(f"Prometheus has no value for {', '.join(missing)} (no samples in the {self.rate_window} window)")
        return Reading(obs, missing, tuple(reasons), age, "prometheus")

    def close(self) -> None:
        self._prom.close()
