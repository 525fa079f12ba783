"""The simulator's engine and fleet: conservation, determinism, queueing, preemption, cold starts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.policy.types import Decision, Observation, Reason
from autoscaler.sim.engine import Replica, Request
from autoscaler.sim.profile import load_profile
from autoscaler.sim.simulator import ModelSpec, SimConfig, Simulation, simulate
from autoscaler.sim.traces import Workload


def _profile(**engine):
    base = load_profile("h100-llama-3.1-8b")
    return base.model_copy(update={"engine": base.engine.model_copy(update=engine)})


def _workload(n=2000, rate=40.0, seed=1, prompt=(200, 3000), output=(5, 400), duration=None):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, n / rate, n)) if duration is None else np.sort(rng.uniform(0, duration, n))
    return Workload("synthetic", "m", t, rng.integers(*prompt, n), rng.integers(*output, n), 0.0,
                    float(t[-1]) + 1.0)


class Fixed:
    """A policy that always asks for `n` replicas and records what it saw."""

    def __init__(self, n, interval_s=10.0):
        self.name, self.n, self.interval_s, self.seen = "fixed", n, interval_s, []

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        return Decision(obs.model, obs.time, obs.current, self.n, Reason.STATIC, "static")


def _run_replica(profile, reqs):
    first = np.full(len(reqs), np.nan)
    done = np.full(len(reqs), np.nan)
    rep = Replica(0, profile, first, done, [0] * 30)
    for i, (t, p, o) in enumerate(reqs):
        rep.advance(t)
        rep.add(Request(i, t, p, o), t)
    rep.advance(1e9)
    return rep, first, done


def test_single_request_ttft_and_tpot_follow_the_step_model():
    prof = _profile()
    e = prof.engine
    rep, first, done = _run_replica(prof, [(1.0, 1000, 11)])
    assert first[0] - 1.0 == pytest.approx(e.step_base_s + 1000 / e.prefill_tokens_per_s)
    # ten decode steps at batch 1 with ~1000 cached tokens
    step = e.step_base_s + e.step_per_seq_s + e.step_per_kv_token_s * 1001
    assert (done[0] - first[0]) / 10 == pytest.approx(step, rel=0.01)
    assert rep.idle() and rep.completed == 1 and rep.kv_used() == 0


def test_long_prompt_is_chunked_by_the_step_token_budget():
    prof = _profile(max_num_batched_tokens=512)
    _, first, _ = _run_replica(prof, [(0.0, 2048, 2)])
    e = prof.engine
    # four chunks; each later chunk also reads the KV of the chunks before it
    assert first[0] == pytest.approx(4 * e.step_base_s + 2048 / e.prefill_tokens_per_s
                                     + e.step_per_kv_token_s * (512 + 1024 + 1536))


def test_decode_steps_slow_down_as_the_batch_grows():
    prof = _profile()
    tpot = []
    for batch in (1, 64, 512):
        _, first, done = _run_replica(prof, [(0.0, 100, 201)] * batch)
        tpot.append(float(np.mean((done - first) / 200)))
    assert tpot[0] < tpot[1] < tpot[2]


def test_queueing_beyond_max_num_seqs():
    prof = _profile(max_num_seqs=4)
    _, first, done = _run_replica(prof, [(0.0, 100, 50)] * 8)
    # the second four start only after the first four finish
    assert np.all(first[4:] >= np.max(done[:4]) - 1e-12)


def test_kv_full_preempts_and_every_request_still_completes():
    prof = _profile(kv_cache_tokens=6000)
    reqs = [(0.01 * i, 1000, 800) for i in range(12)]
    rep, first, done = _run_replica(prof, reqs)
    assert rep.preemptions > 0
    assert not np.isnan(done).any()
    assert rep.kv_used() == 0 and rep.idle()


def test_requests_are_conserved_under_pressure_drops_and_scaling():
    prof = _profile(kv_cache_tokens=20000, max_model_len=8000)
    w = _workload(n=3000, rate=200.0, prompt=(100, 9000), output=(1, 3000))
    sim = Simulation(ModelSpec(w, Fixed(3), prof), SimConfig(drain_after_end_s=5.0, initial_replicas=1))
    res = sim.run()[0]
    done = ~np.isnan(sim.done)
    dropped = sim.dropped > 0
    assert not (done & dropped).any()
    assert (done | dropped).all()
    assert res.completed + sum(res.dropped.values()) == res.requests == len(w)
    assert res.dropped["rejected_too_long"] > 0 and res.dropped["unfinished"] > 0
    assert res.preemptions > 0


def test_a_run_is_deterministic_for_a_seed():
    from autoscaler.sim.traces import load_workload

    prof = _profile()
    w1 = _workload(n=4000, rate=120.0)
    w2 = _workload(n=4000, rate=120.0)
    r1 = simulate(w1, Fixed(3), prof).to_dict(timeline=True)
    r2 = simulate(w2, Fixed(3), prof).to_dict(timeline=True)
    for r in (r1, r2):
        r.pop("wall_s")
        r.pop("requests_per_wall_s")
    assert r1 == r2
    a = load_workload("azure-code", factor=1.7, seed=5)
    b = load_workload("azure-code", factor=1.7, seed=5)
    c = load_workload("azure-code", factor=1.7, seed=6)
    assert np.array_equal(a.arrival, b.arrival) and np.array_equal(a.prompt, b.prompt)
    assert not np.array_equal(a.arrival, c.arrival)


def test_cold_start_from_zero_holds_requests_at_the_gateway():
    prof = _profile()
    w = _workload(n=200, rate=20.0)
    res = simulate(w, Fixed(2, interval_s=1.0), prof, SimConfig(initial_replicas=0))
    assert res.cold_start_waits > 0
    assert res.completed == res.requests
    assert res.ttft_p99_s >= prof.cold_start.total_s - 1.5


def test_requests_that_miss_ttft_behind_a_starting_scale_up_count_as_cold_start_waits():
    prof = _profile()
    w = _workload(n=3000, rate=100.0)
    # One Ready replica is overloaded at once; the scale-up to 6 is still loading when the queue builds.
    undersized = simulate(w, Fixed(6, interval_s=1.0), prof, SimConfig(initial_replicas=1))
    steady = simulate(_workload(n=3000, rate=100.0), Fixed(1, interval_s=1.0), prof, SimConfig(initial_replicas=1))
    assert undersized.slo_attainment["2s/100ms"] < 1.0
    assert undersized.cold_start_waits > 0
    # Without a scale-up in flight, the same misses are plain overload, not cold-start waits.
    assert steady.cold_start_waits == 0


def test_attainment_after_warmup_leaves_out_the_cold_first_minutes():
    prof = _profile()
    w = _workload(n=1200, rate=2.0)   # 600 s of arrivals; the first 300 s meet a fleet starting from zero
    res = simulate(w, Fixed(2, interval_s=1.0), prof, SimConfig(initial_replicas=0))
    assert res.attainment < 1.0       # the requests held through the cold start miss the 2 s TTFT
    assert res.attainment_after_warmup == 1.0
    short = simulate(_workload(n=100, rate=2.0), Fixed(2, interval_s=1.0), prof, SimConfig(initial_replicas=0))
    assert short.attainment_after_warmup is None   # nothing arrives after the warm-up


def test_gpu_budget_caps_replicas_and_gpu_hours():
    prof = _profile()
    w = _workload(n=3000, rate=100.0)
    res = simulate(w, Fixed(50), prof, SimConfig(gpu_budget=4, initial_replicas=1))
    assert res.peak_replicas <= 4
    assert res.gpu_hours <= 4 * (w.end_s - w.start_s) / 3600 + 1e-9


def test_scale_down_drains_without_losing_requests():
    prof = _profile()

    class Down(Fixed):
        def decide(self, obs):
            self.seen.append(obs)
            n = 6 if obs.time < 20 else 1
            return Decision(obs.model, obs.time, obs.current, n, Reason.STATIC, "static")

    w = _workload(n=3000, rate=60.0)
    res = simulate(w, Down(0, interval_s=5.0), prof, SimConfig(initial_replicas=6))
    assert res.scale_down_events >= 1
    assert res.completed == res.requests


def test_observation_metrics_lag_and_cpu():
    from autoscaler.sim.sensing import SensingConfig

    prof = _profile()
    w = _workload(n=6000, rate=20.0)
    pol = Fixed(3, interval_s=10.0)
    sensing = SensingConfig(scrape_interval_s=15.0, lag_s=20.0)
    simulate(w, pol, prof, SimConfig(sensing=sensing, initial_replicas=3))
    seen = [o for o in pol.seen if o.metrics_time is not None]
    assert seen, "the policy never saw metrics"
    for o in seen:
        assert o.metrics_time <= o.time - 20.0 + 1e-9
        assert o.cpu_utilization is None or 0.9 <= o.cpu_utilization <= 1.0
        assert o.kv_cache_usage is not None and 0.0 <= o.kv_cache_usage <= 1.0
    rates = [o.request_rate for o in seen if o.request_rate is not None]
    assert rates and abs(np.median(rates) - 20.0) < 5.0
    assert sum(o.cpu_utilization is not None for o in seen) >= len(seen) - 2   # one sample: no CPU rate yet
    arrivals = [o.arrival_rate for o in seen if o.arrival_rate is not None]
    assert arrivals and abs(np.median(arrivals) - 20.0) < 5.0
    assert any(o.ttft_p95 is not None and o.ttft_p95 > 0 for o in seen)


def test_prewarm_hook_gets_rates_and_its_floor_reaches_the_policy():
    from forecasting.types import ReplicaFloor
    from autoscaler.sim.prewarm import PrewarmPlanner, feed_history

    class Planner:
        def __init__(self):
            self.calls = []

        def observe(self, model, t, request_rate, prompt_token_rate, generation_token_rate):
            self.calls.append((model, t, request_rate, prompt_token_rate, generation_token_rate))

        def floor(self, model, now):
            return ReplicaFloor(model, 3, now + 60, "test")

    prof = _profile()
    w = _workload(n=2000, rate=40.0)
    planner = Planner()
    assert isinstance(planner, PrewarmPlanner)
    pol = Fixed(1, interval_s=10.0)
    simulate(w, pol, prof, prewarm=planner)
    assert planner.calls and all(c[0] == "m" and c[2] > 0 for c in planner.calls)
    assert all(o.floor is not None and o.floor.replicas == 3 for o in pol.seen)
    # history feeding for a sliced trace
    p2 = Planner()
    w.start_s = 600.0
    assert feed_history(p2, w, start_s=0.0, interval_s=60.0) == 10


def test_oracle_is_clairvoyant_and_meets_the_slo_on_a_step_load():
    from autoscaler.sim.oracle import OraclePolicy

    prof = _profile()
    rng = np.random.default_rng(3)
    t = np.sort(np.concatenate([rng.uniform(0, 600, 3000), rng.uniform(600, 1200, 30000)]))
    n = t.size
    w = Workload("step", "m", t, rng.integers(500, 1500, n), rng.integers(50, 300, n), 0.0, 1200.0)
    res = simulate(w, OraclePolicy(w, prof), prof)
    assert res.attainment >= 0.99
    # replicas were Ready before the step at t=600 (ordered a cold start ahead)
    tl = res.timeline
    i = next(k for k, x in enumerate(tl["t"]) if x >= 600)
    assert tl["ready"][i] >= 4


def test_hist_quantile_matches_prometheus_interpolation():
    from autoscaler.sim.simulator import _hist_quantile
    from autoscaler.sim.engine import TTFT_BUCKETS

    counts = [0] * (len(TTFT_BUCKETS) + 1)
    counts[TTFT_BUCKETS.index(0.25)] = 100   # all in (0.1, 0.25]
    assert _hist_quantile(0.5, counts) == pytest.approx(0.175)
    assert _hist_quantile(0.95, [0] * (len(TTFT_BUCKETS) + 1)) is None
    assert math.isfinite(_hist_quantile(0.95, counts))


def test_the_slo_allows_each_prompt_its_idle_prefill_and_counts_the_unservable_apart():
    from autoscaler.policy.registry import make_policy
    from autoscaler.sim.results import PRIMARY_SLO

    prof = _profile()
    # one at a time, far apart, on one replica: TTFT = the idle prefill of each prompt
    prompts = np.array([1_000, 60_000, 100_000, 140_000])   # 60k and 100k take > 2 s alone; 140k > max_model_len
    t = np.array([0.0, 100.0, 200.0, 300.0])
    w = Workload("long", "m", t, prompts, np.full(4, 20), 0.0, 400.0)
    res = simulate(w, make_policy("static", prof.to_capacity(), replicas=1), prof)
    assert prof.idle_ttft_s(60_000) > PRIMARY_SLO.ttft_s
    assert res.unattainable == 1 and res.dropped["rejected_too_long"] == 1
    assert res.attainment == 1.0 and res.slo_misses[PRIMARY_SLO.key] == 0
    # the same prompts arriving together queue behind each other: the later ones miss
    w2 = Workload("long", "m", np.array([0.0, 0.01, 0.02, 0.03]), prompts, np.full(4, 20), 0.0, 400.0)
    res2 = simulate(w2, make_policy("static", prof.to_capacity(), replicas=1), prof)
    assert res2.slo_misses[PRIMARY_SLO.key] >= 1 and res2.attainment < 1.0
