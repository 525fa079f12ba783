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
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, KV_CACHE_USAGE_LEGACY, MODEL_LABEL,
                                 NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, PROMPT_TOKENS, ROUTER_HELD_REQUESTS,
                                 ROUTER_MODEL_LABEL, TIME_TO_FIRST_TOKEN, Observation, arrival_rate_query,
                                 request_rate_query, token_rate_query)
from autoscaler.metrics.observe import LOAD_FIELDS, Reading

__all__ = ["PrometheusSensor", "matchers", "model_queries"]


def matchers(labels: Mapping[str, str]) -> str:
    """PromQL equality matchers for `labels` (values escaped)."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')
    return ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())


def model_queries(model: str, window: str = "1m", selector: str | None = None) -> dict[str, str]:
    """Observation field -> PromQL for one model. `selector`: matchers for its engine series."""
    s = selector if selector is not None else matchers({MODEL_LABEL: model})
    router = matchers({ROUTER_MODEL_LABEL: model})
    return {
        "metrics_time": f"max(timestamp({NUM_REQUESTS_WAITING}{{{s}}}))",
        "waiting_requests": f"sum({NUM_REQUESTS_WAITING}{{{s}}})",
        "running_requests": f"sum({NUM_REQUESTS_RUNNING}{{{s}}})",
        "kv_cache_usage": f"avg({KV_CACHE_USAGE}{{{s}}}) or avg({KV_CACHE_USAGE_LEGACY}{{{s}}})",
        "request_rate": request_rate_query(window, selector=s),
        "prompt_token_rate": token_rate_query(PROMPT_TOKENS, window, selector=s),
        "generation_token_rate": token_rate_query(GENERATION_TOKENS, window, selector=s),
        "ttft_p95": f"histogram_quantile(0.95, sum by (le) (rate({TIME_TO_FIRST_TOKEN}_bucket{{{s}}}[{window}])))",
        "arrival_rate": arrival_rate_query(window, selector=router),
        "held_requests": f"sum({ROUTER_HELD_REQUESTS}{{{router}}})",
    }


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
        try:
            result = self._prom.custom_query(query, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise QueryFailed(f"Prometheus at {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        except (PrometheusApiClientException, ValueError, KeyError) as exc:
            raise QueryFailed(f"Prometheus at {self.url} rejected {query!r}: {exc}") from exc
        values = [float(series["value"][1]) for series in result]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None

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
        metrics_time = values.pop("metrics_time", None)
        age = now - metrics_time if metrics_time is not None else None
        if values and metrics_time is None and ready_replicas > 0:
            reasons.append(f"Prometheus at {self.url} has no series for {queries['waiting_requests']} "
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
