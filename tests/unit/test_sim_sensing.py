"""The simulator's metrics are production's: vLLM's counters and gauges, the router's, through
Prometheus (scrape interval, jitter, misses, lag, rate() extrapolation) or direct scrapes."""
from __future__ import annotations

import numpy as np
import pytest

from autoscaler.contract import Decision, Observation, Reason
from autoscaler.sim.profile import load_profile
from autoscaler.sim.sensing import SensingConfig, Sensor, extrapolated_rate
from autoscaler.sim.simulator import SimConfig, simulate
from autoscaler.sim.traces import Workload


class Fixed:
    def __init__(self, n, interval_s=5.0):
        self.name, self.n, self.interval_s, self.seen = "fixed", n, interval_s, []

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        return Decision(obs.model, obs.time, obs.current, self.n, Reason.STATIC, "static")


def test_rate_extrapolates_to_the_window_edges_as_prometheus_does():
    # counter +1/s, scraped at 5, 20, 35, 50 in (0, 60]: both edges within 1.1 intervals -> exact
    samples = [(t, float(t)) for t in (5, 20, 35, 50)]
    assert extrapolated_rate(samples, 0.0, 60.0) == pytest.approx(1.0)
    # far from the end (lag): extrapolated by half an interval only -> under-reads
    assert extrapolated_rate(samples[:2], 0.0, 60.0) == pytest.approx(15 * (15 + 5 + 7.5) / 15 / 60)
    # a new pod's counter starts at 0: no extrapolation before its zero
    assert extrapolated_rate([(30, 0.0), (45, 15.0)], 0.0, 60.0) == pytest.approx(15 * 30 / 15 / 60)
    # a counter reset counts the value before it
    assert extrapolated_rate([(0, 10.0), (15, 20.0), (30, 5.0)], 0.0, 30.0) == pytest.approx((10 + 5) / 30)
    assert extrapolated_rate([(5, 1.0)], 0.0, 60.0) is None


def test_production_defaults():
    prom, direct = SensingConfig(), SensingConfig(mode="direct")
    assert (prom.interval, prom.lag, prom.rate_window_s, prom.miss_rate) == (15.0, 15.0, 60.0, 0.01)
    assert (direct.interval, direct.lag) == (1.0, 0.0)
    with pytest.raises(ValueError, match="miss_rate"):
        SensingConfig(miss_rate=1.5)
    with pytest.raises(ValueError, match="mode"):
        SensingConfig(mode="psychic")


def _overload(n=8000, rate=40.0, seed=2):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, n / rate, n))
    return Workload("w", "m", t, rng.integers(1000, 3000, n), rng.integers(100, 400, n), 0.0, float(t[-1]) + 1)


def test_finished_requests_and_prefilled_tokens_lag_arrivals_under_overload():
    prof = load_profile()
    w = _overload()
    pol = Fixed(1)   # one replica for ~3x its capacity: a queue builds in the engine
    simulate(w, pol, prof, SimConfig(initial_replicas=1, sensing=SensingConfig(mode="direct", miss_rate=0.0)))
    late = [o for o in pol.seen if o.time > 120 and o.request_rate is not None]
    arrivals = np.median([o.arrival_rate for o in late])
    assert arrivals == pytest.approx(40.0, rel=0.15)
    assert np.median([o.request_rate for o in late]) < 0.5 * arrivals          # finished, not arrived
    mean_prompt = float(np.mean(w.prompt))
    assert np.median([o.prompt_token_rate for o in late]) < 0.5 * arrivals * mean_prompt   # at prefill
    assert max(o.waiting_requests for o in late) > 100                         # the engine's own queue


def test_requests_held_at_the_router_are_not_in_vllms_waiting():
    prof = load_profile()
    w = _overload(n=400, rate=20.0)
    pol = Fixed(0)   # nothing ever starts: every request is held by the router
    simulate(w, pol, prof, SimConfig(initial_replicas=0, sensing=SensingConfig(mode="direct", miss_rate=0.0)))
    late = [o for o in pol.seen if o.time > 10]
    assert all(o.waiting_requests == 0.0 and o.ready_replicas == 0 for o in late)
    assert max(o.held_requests for o in late) > 100
    no_router = Fixed(0)
    simulate(w, no_router, prof, SimConfig(initial_replicas=0, sensing=SensingConfig(router=False)))
    assert all(o.arrival_rate is None and o.held_requests is None for o in no_router.seen)


def test_prometheus_answers_arrive_late_and_some_scrapes_are_missed():
    prof = load_profile()
    w = _overload(n=6000, rate=10.0)
    pol = Fixed(2, interval_s=15.0)
    simulate(w, pol, prof, SimConfig(initial_replicas=2, sensing=SensingConfig()))
    seen = [o for o in pol.seen if o.metrics_time is not None]
    assert seen and all(o.metrics_time <= o.time - 15.0 + 1e-9 for o in seen)
    ages = [o.time - o.metrics_time for o in seen]
    assert max(ages) > 15.0 + 1.0   # scrape slots and jitter add to the delivery lag

    class Pod:   # the counters and gauges a replica exposes
        completed = prompt_tokens_done = gen_tokens = 0
        waiting, admitted, busy_s = (), {}, 0.0

        def kv_used(self):
            return 0

    sensor = Sensor(SensingConfig(miss_rate=0.3), "m", prof, seed=1)
    pod = Pod()
    slot = t = 0.0
    for _ in range(2000):
        sensor.scrape(t, [pod], 0, 0, [0] * 23)
        slot, t = sensor.next_scrape(slot)
    kept = len(sensor.pods[pod].samples)
    # samples within the kept span (window + lag + 3 intervals + 5 min lookback = 420 s -> 28 slots)
    assert 0.5 * 28 < kept < 0.9 * 28
