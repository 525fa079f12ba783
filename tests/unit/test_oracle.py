"""The oracle is the exact optimum of its stated problem: checked against brute force and against
feasible fleets, with the cold start and the GPU budget respected."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autoscaler.sim.oracle import OraclePolicy, need_per_step, optimal_plan, solve
from autoscaler.sim.profile import load_profile
from autoscaler.sim.simulator import SimConfig, simulate
from autoscaler.sim.traces import Workload


def _brute_force(need, durations, cold_s, step_s):
    """Every Ready sequence in [0, max need]^T that meets the problem's constraints; the cheapest cost."""
    lead = math.ceil(cold_s / step_s - 1e-9)
    best = math.inf
    for seq in itertools.product(range(max(need) + 1), repeat=len(need)):
        if any(n < k for n, k in zip(seq, need)):
            continue
        if any(seq[t] > seq[t - 1] for t in range(1, min(lead, len(seq)))):
            continue   # nothing ordered at the start can be Ready before one cold start
        cost = sum(n * d for n, d in zip(seq, durations))
        cost += cold_s * sum(max(0, seq[t] - seq[t - 1]) for t in range(1, len(seq)))
        best = min(best, cost)
    return best


def _cost(seq, durations, cold_s):
    return float(np.dot(seq, durations) + cold_s * np.maximum(0, np.diff(seq)).sum())


@pytest.mark.parametrize("seed", range(12))
def test_the_programme_equals_brute_force_on_tiny_problems(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(2, 7))
    need = rng.integers(0, 4, T)
    step = 10.0
    cold = float(rng.choice([5.0, 10.0, 25.0, 31.0, 45.0]))
    durations = np.full(T, step)
    durations[-1] = float(rng.choice([step, 3.0]))
    ready, total = solve(need, durations, cold, step)
    assert total == pytest.approx(_brute_force(need.tolist(), durations.tolist(), cold, step))
    assert np.all(ready >= need)
    assert _cost(ready, durations, cold) == pytest.approx(total)   # the plan returned is the one valued


def test_nothing_can_be_added_before_one_cold_start_so_the_start_holds_the_early_peak():
    need = np.array([1, 1, 1, 5, 1, 1, 1, 1, 1, 1])
    ready, _ = solve(need, np.full(10, 10.0), 31.0, 10.0)      # lead: 4 steps
    assert ready[0] == 5 and np.all(ready[:4] == 5)
    ready, _ = solve(np.array([1, 1, 1, 1, 5, 1]), np.full(6, 10.0), 31.0, 10.0)
    assert ready[0] == 1 and ready[4] == 5                         # in reach: ordered, not held from the start


def test_a_gap_shorter_than_a_cold_start_is_held_through_a_longer_one_is_released():
    short = np.array([3, 3, 3, 3, 3, 1, 1, 3, 3])
    ready, _ = solve(short, np.full(short.size, 10.0), 31.0, 10.0)
    assert np.all(ready[5:7] == 3)          # releasing for 20 s and restarting would cost 31 s each
    long = np.array([3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 3, 3])
    ready, _ = solve(long, np.full(long.size, 10.0), 31.0, 10.0)
    assert np.all(ready[5:10] == 1)         # 50 s idle costs more than a restart


def _workload(seed=0, n_lo=3000, n_hi=30000, span=1200.0):
    rng = np.random.default_rng(seed)
    half = span / 2
    t = np.sort(np.concatenate([rng.uniform(0, half, n_lo), rng.uniform(half, span, n_hi)]))
    n = t.size
    return Workload("step", "m", t, rng.integers(500, 1500, n), rng.integers(50, 300, n), 0.0, span)


def test_the_bound_is_below_every_feasible_fleet_and_the_plan_values_what_it_holds():
    prof = load_profile()
    w = _workload()
    plan = optimal_plan(w, prof)
    assert plan.need.max() >= 4 and np.all(plan.ready >= plan.need)
    durations = np.full(plan.need.size, plan.step_s)
    cold = prof.cold_start.total_s
    assert plan.gpu_hours * 3600 == pytest.approx(_cost(plan.ready, durations, cold))
    rng = np.random.default_rng(1)
    lead = math.ceil(cold / plan.step_s)
    for _ in range(200):   # random feasible fleets: the need plus random extra, no rise before the lead
        seq = plan.need + rng.integers(0, 3, plan.need.size)
        seq[:lead] = seq[:lead].max()
        assert _cost(seq, durations, cold) >= plan.gpu_hours * 3600 - 1e-6
    static = np.full(plan.need.size, plan.need.max())
    assert _cost(static, durations, cold) > plan.gpu_hours * 3600
    need = need_per_step(w.arrival, w.prompt, w.output, w.start_s, w.end_s, prof)
    assert np.array_equal(plan.need, np.ceil(need - 1e-9).astype(int))


def test_a_budget_caps_the_need_and_says_how_often():
    prof = load_profile()
    w = _workload()
    plan = optimal_plan(w, prof, gpu_budget=3)
    assert plan.peak == 3 and plan.capped_steps > 0 and "more than the budget" in plan.describe()
    with pytest.raises(ValueError, match="headroom"):
        optimal_plan(w, prof, headroom=0)


def test_the_replay_pays_at_least_the_bound_and_headroom_buys_the_slo():
    prof = load_profile()
    w = _workload(seed=3)
    bound = optimal_plan(w, prof)
    loose = OraclePolicy(w, prof, headroom=0.8)
    res = simulate(w, loose, prof)
    assert res.gpu_hours >= bound.gpu_hours - 1e-9
    assert res.gpu_hours <= 1.5 * bound.gpu_hours
    assert res.attainment >= 0.99
    assert loose.plan.gpu_hours > bound.gpu_hours       # headroom costs GPU-hours: the bound stays the bound
    tight = simulate(w, OraclePolicy(w, prof, plan=bound), prof, SimConfig())
    assert tight.gpu_hours >= bound.gpu_hours - 1e-9


def test_the_first_minute_of_a_long_workload_counts_only_its_own_arrivals():
    from autoscaler.sim.oracle import first_minute_need

    prof = load_profile()
    w = _workload(span=3600.0, n_lo=20000, n_hi=200000)
    first = w.arrival < 60.0
    cut = Workload("cut", "m", w.arrival[first], w.prompt[first], w.output[first], 0.0, 60.0)
    assert first_minute_need(w, prof) == first_minute_need(cut, prof) <= 3
