"""ObservationBuilder: scrape rounds of Ready pods -> Observation, as Prometheus would compute it."""
from __future__ import annotations

import math

import pytest

from autoscaler.metrics.observe import ObservationBuilder, counter_increase, histogram_quantile
from autoscaler.metrics.scrape import EngineSample, Histogram

LES = (0.1, 1.0, math.inf)


def sample(t, waiting=0.0, running=0.0, kv=0.0, done=0.0, prompt=0.0, gen=0.0, ttft=(0.0, 0.0, 0.0), **kw):
    hist = Histogram(tuple(zip(LES, ttft)), ttft[-1], 0.0) if ttft is not None else None
    return EngineSample(time=t, waiting=waiting, running=running, kv_cache_usage=kv, request_success=done,
                        prompt_tokens=prompt, generation_tokens=gen, ttft=hist, **kw)


def test_counter_increase_handles_a_reset():
    assert counter_increase([5, 8, 2, 6]) == 3 + 2 + 4
    assert counter_increase([5]) == 0


def test_histogram_quantile_interpolates_like_promql():
    buckets = [(0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.1 + 0.9 * 0.5)
    assert histogram_quantile(0.99, [(0.1, 0.0), (1.0, 10.0), (math.inf, 100.0)]) == 1.0   # +Inf: highest bound
    assert histogram_quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_gauges_sum_and_average_over_ready_pods_and_time_is_the_newest_sample():
    b = ObservationBuilder("m")
    r = b.build(now=103.0, samples={"p1": sample(100.0, 2, 4, 0.2), "p2": sample(101.0, 3, 1, 0.6)},
                ready_replicas=2, loading_replicas=1)
    o = r.observation
    assert (o.model, o.time, o.ready_replicas, o.loading_replicas) == ("m", 103.0, 2, 1)
    assert o.waiting_requests == 5 and o.running_requests == 5
    assert o.kv_cache_usage == pytest.approx(0.4)
    assert o.metrics_time == 101.0 and r.age_s == pytest.approx(2.0)
    assert o.request_rate is None and "request_rate" in r.missing     # one round: no rate yet


def test_rates_come_from_counter_increases_over_the_window():
    b = ObservationBuilder("m", rate_window_s=60)
    b.build(0.0, {"p1": sample(0.0), "p2": sample(0.0)}, 2, 0)
    r = b.build(10.0, {"p1": sample(10.0, done=20, prompt=2000, gen=500),
                       "p2": sample(10.0, done=10, prompt=1000, gen=100)}, 2, 0)
    o = r.observation
    assert o.request_rate == pytest.approx(3.0)
    assert o.prompt_token_rate == pytest.approx(300.0)
    assert o.generation_token_rate == pytest.approx(60.0)


def test_old_samples_leave_the_window():
    b = ObservationBuilder("m", rate_window_s=20)
    b.build(0.0, {"p": sample(0.0)}, 1, 0)
    b.build(10.0, {"p": sample(10.0, done=100)}, 1, 0)      # a burst early on
    r = b.build(40.0, {"p": sample(40.0, done=100)}, 1, 0)  # nothing since: window [20, 40] holds one sample
    assert r.observation.request_rate is None
    r = b.build(50.0, {"p": sample(50.0, done=110)}, 1, 0)
    assert r.observation.request_rate == pytest.approx(1.0)


def test_a_restarted_engine_is_a_counter_reset_not_a_negative_rate():
    b = ObservationBuilder("m")
    b.build(0.0, {"p": sample(0.0, done=500)}, 1, 0)
    b.build(10.0, {"p": sample(10.0, done=520)}, 1, 0)
    r = b.build(20.0, {"p": sample(20.0, done=5)}, 1, 0)   # restarted, then served 5
    assert r.observation.request_rate == pytest.approx((20 + 5) / 20)


def test_ttft_p95_from_bucket_increases_in_the_window():
    b = ObservationBuilder("m")
    b.build(0.0, {"p": sample(0.0, ttft=(100.0, 100.0, 100.0))}, 1, 0)   # old, fast requests
    r = b.build(10.0, {"p": sample(10.0, ttft=(100.0, 110.0, 120.0))}, 1, 0)
    # the window saw 10 in (0.1, 1] and 10 above 1 s: p95 falls in +Inf -> highest finite bound
    assert r.observation.ttft_p95 == 1.0
    # 100 new requests all in (0.1, 1]: rank 95 interpolates inside that bucket
    b2 = ObservationBuilder("m")
    b2.build(0.0, {"p": sample(0.0)}, 1, 0)
    r2 = b2.build(10.0, {"p": sample(10.0, ttft=(0.0, 100.0, 100.0))}, 1, 0)
    assert r2.observation.ttft_p95 == pytest.approx(0.1 + 0.9 * 0.95)


def test_a_pod_that_was_not_scraped_makes_the_gauges_unknown_not_smaller():
    b = ObservationBuilder("m")
    r = b.build(5.0, {"p1": sample(5.0, waiting=9)}, ready_replicas=2, loading_replicas=0,
                errors={"p2": "scrape of http://127.0.0.1:9/metrics failed: ConnectError"})
    o = r.observation
    assert o.waiting_requests is None and o.running_requests is None and o.kv_cache_usage is None
    assert "waiting_requests" in r.missing and not r.complete
    assert any("p2" in line and "127.0.0.1:9" in line for line in r.reasons)
    assert any("1 of 2 Ready pods scraped" in line for line in r.reasons)


def test_a_series_missing_from_a_pod_is_none_with_a_reason():
    b = ObservationBuilder("m")
    r = b.build(1.0, {"p": EngineSample(time=1.0, waiting=1.0)}, 1, 0)
    assert r.observation.waiting_requests == 1.0
    assert r.observation.running_requests is None and r.observation.kv_cache_usage is None
    assert any("running_requests" in line for line in r.reasons)


def test_no_ready_pod_means_an_empty_queue_but_unknown_kv():
    b = ObservationBuilder("m")
    r = b.build(1.0, {}, ready_replicas=0, loading_replicas=2)
    o = r.observation
    assert o.waiting_requests == 0.0 and o.running_requests == 0.0
    assert o.kv_cache_usage is None and o.metrics_time is None and r.age_s is None


def test_a_departed_pod_still_counts_in_the_rate_window():
    b = ObservationBuilder("m")
    b.build(0.0, {"p1": sample(0.0), "p2": sample(0.0)}, 2, 0)
    b.build(10.0, {"p1": sample(10.0, done=10), "p2": sample(10.0, done=30)}, 2, 0)
    r = b.build(20.0, {"p1": sample(20.0, done=20)}, 1, 0)   # p2 scaled away after 10 s
    assert r.observation.request_rate == pytest.approx((20 + 30) / 20)


def test_router_arrivals_and_held_requests():
    b = ObservationBuilder("m")
    b.build(0.0, {}, 0, 1, router=EngineSample(time=0.0, arrivals=100.0, held=0.0))
    r = b.build(5.0, {}, 0, 1, router=EngineSample(time=5.0, arrivals=110.0, held=4.0))
    assert r.observation.arrival_rate == pytest.approx(2.0)
    assert r.observation.held_requests == 4.0
    assert r.observation.metrics_time == 5.0


def test_without_a_router_arrivals_are_none():
    r = ObservationBuilder("m").build(1.0, {"p": sample(1.0)}, 1, 0)
    assert r.observation.arrival_rate is None and r.observation.held_requests is None


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="rate_window_s must be > 0, got 0"):
        ObservationBuilder("m", rate_window_s=0)


def test_a_missed_scrape_keeps_the_pods_last_sample_for_a_while_as_prometheus_would():
    b = ObservationBuilder("m", gauge_max_age_s=15.0)
    b.build(5.0, {"p1": sample(5.0, waiting=1), "p2": sample(5.0, waiting=4, running=3, kv=0.5)}, 2, 0)
    r = b.build(10.0, {"p1": sample(10.0, waiting=2, kv=0.1)}, ready_replicas=2, loading_replicas=0,
                errors={"p2": "scrape of http://127.0.0.1:9/metrics failed: ReadTimeout"})
    o = r.observation
    assert o.waiting_requests == 6.0 and o.running_requests == 3.0 and o.kv_cache_usage == pytest.approx(0.3)
    assert "waiting_requests" not in r.missing and "running_requests" not in r.missing
    assert any("p2" in line and "5.0 s ago stands in" in line for line in r.reasons)
    assert any("p2" in line and "ReadTimeout" in line for line in r.reasons)


def test_a_pod_silent_for_longer_than_the_gauge_age_leaves_the_gauges_unknown():
    b = ObservationBuilder("m", gauge_max_age_s=15.0)
    b.build(5.0, {"p1": sample(5.0), "p2": sample(5.0, waiting=4)}, 2, 0)
    r = b.build(25.0, {"p1": sample(25.0)}, ready_replicas=2, loading_replicas=0, errors={"p2": "timed out"})
    assert r.observation.waiting_requests is None and "waiting_requests" in r.missing
    assert not any("stands in" in line for line in r.reasons)


def test_gauge_age_must_not_be_negative():
    with pytest.raises(ValueError, match="gauge_max_age_s must be >= 0"):
        ObservationBuilder("m", gauge_max_age_s=-1)
