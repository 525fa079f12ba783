"""Demand history from a real Prometheus scraping a real vLLM engine."""

from __future__ import annotations

import math
import time

import pytest

from forecasting.history import history_queries, prometheus_history
from tests.ground.load import burst

pytestmark = pytest.mark.integration

WINDOW_S = 5.0
SCRAPE_INTERVAL_S = 1.0  # the test ground's Prometheus


def test_range_query_returns_per_model_request_and_token_rates(prometheus, vllm_engine):
    prometheus.add_target(vllm_engine.address)
    queries = history_queries(WINDOW_S, SCRAPE_INTERVAL_S)
    # The counters must have a sample from before the first burst, or rate() cannot see it.
    prometheus.wait_for_series(f'up{{instance="{vllm_engine.address}"}}', timeout_s=30, predicate=lambda v: v == 1)
    time.sleep(2.0)
    start = time.time()
    # Two bursts with a quiet spell between them, so the history has both load and no load.
    for _ in range(2):
        results = burst(vllm_engine, n=8, prompt_len=32, max_tokens=8)
        assert all(r.error is None for r in results)
        time.sleep(2 * WINDOW_S)
    prometheus.wait_for_series(queries["requests"], timeout_s=30, predicate=lambda v: v >= 0)
    time.sleep(WINDOW_S)
    end = time.time()

    series = {s.model: s for s in prometheus_history(prometheus.url, start, end, WINDOW_S, scrape_interval_s=SCRAPE_INTERVAL_S)}
    assert vllm_engine.model in series
    s = series[vllm_engine.model]
    assert s.window_s == WINDOW_S
    observed = [v for v in s.values if not math.isnan(v)]
    assert observed, "no window observed"
    # 16 requests were served: summed over windows, rate x window recovers about that many
    # (rate() extrapolates at the edges, so allow slack).
    assert 8 <= sum(observed) * WINDOW_S <= 32
    assert max(observed) > 0 and min(observed) == 0
    assert s.prompt_tokens is not None and s.generation_tokens is not None
    assert sum(v for v in s.generation_tokens if not math.isnan(v)) * WINDOW_S == pytest.approx(16 * 8, rel=0.5)


def test_no_series_gives_a_clear_error(prometheus):
    from forecasting.series import InvalidSeriesError

    now = time.time()
    # An hour before this Prometheus started it holds no samples at all.
    with pytest.raises(InvalidSeriesError, match="returned no series"):
        prometheus_history(prometheus.url, now - 7200, now - 3600, 600.0)
