"""Demand history from Prometheus range queries (prometheus-api-client) and from trace files.

`prometheus_history` asks for the per-model rates of vLLM's request and token counters with one
range query each, stepping by the forecast window and taking `rate()` over that window plus one scrape
interval, so each point is the mean rate of one window. (Over exactly the window, the increase between the
last sample of one window and the first of the next would fall between the two and be lost.) The PromQL comes from `autoscaler.metrics.vllm_names`, where
the metric names are defined once. Trace files are read by `forecasting.traces.load_trace`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from prometheus_api_client import PrometheusConnect

from autoscaler.metrics import vllm_names
from forecasting.series import InvalidSeriesError, WindowedSeries
from forecasting.traces import load_trace

__all__ = ["history_queries", "prometheus_history", "load_trace"]


def history_queries(window_s: float, scrape_interval_s: float = 15.0) -> dict[str, str]:
    """The PromQL range queries for request, prompt-token and generated-token rates per model."""
    window = f"{int(round(window_s + scrape_interval_s))}s"
    return {
        "requests": vllm_names.request_rate(window),
        "prompt_tokens": vllm_names.token_rate(vllm_names.PROMPT_TOKENS, window),
        "generation_tokens": vllm_names.token_rate(vllm_names.GENERATION_TOKENS, window),
    }


def prometheus_history(
    url: str,
    start: float,
    end: float,
    window_s: float,
    client: PrometheusConnect | None = None,
    scrape_interval_s: float = 15.0,
) -> list[WindowedSeries]:
    """Per-model demand between `start` and `end` (Unix seconds) on `window_s` windows.

    A window without a sample (the engine was not scraped, or not running) is a gap. Raises
    `InvalidSeriesError` when Prometheus returns no request-rate series at all.
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    if not end > start:
        raise ValueError(f"end ({end!r}) must be after start ({start!r})")
    prom = client or PrometheusConnect(url=url, disable_ssl=True)
    step = f"{int(round(window_s))}s"
    by_kind: dict[str, dict[str, dict[float, float]]] = {}
    queries = history_queries(window_s, scrape_interval_s)
    for kind, query in queries.items():
        result = prom.custom_query_range(
            query,
            start_time=datetime.fromtimestamp(start, tz=timezone.utc),
            end_time=datetime.fromtimestamp(end, tz=timezone.utc),
            step=step,
        )
        by_kind[kind] = {_model_of(item): _points(item["values"], window_s) for item in result}
    if not by_kind["requests"]:
        raise InvalidSeriesError(f"Prometheus at {url} returned no series for {queries['requests']!r}")
    series = []
    for model, requests in sorted(by_kind["requests"].items()):
        if not requests:
            continue
        times = np.array(sorted(requests))
        tokens = {}
        for kind in ("prompt_tokens", "generation_tokens"):
            points = by_kind[kind].get(model, {})
            tokens[kind] = [points[t] for t in times] if all(t in points for t in times) else None
        series.append(
            WindowedSeries.from_points(
                model, times, [requests[t] for t in times], window_s,
                prompt_tokens=tokens["prompt_tokens"], generation_tokens=tokens["generation_tokens"],
            )
        )
    return series


def _model_of(item: dict) -> str:
    return item.get("metric", {}).get(vllm_names.MODEL_LABEL, "")


def _points(values: list, window_s: float) -> dict[float, float]:
    """Map window start -> rate; a sample at time t is the mean rate of the window ending at t."""
    points = {}
    for stamp, text in values:
        value = float(text)
        if math.isfinite(value):
            # rate() can dip a hair below zero through float error around counter resets.
            points[float(stamp) - window_s] = max(value, 0.0)
    return points
