"""The activator in the simulator: a request held for a model with nothing Ready, starting or pending
makes the policy decide for that model at once (a poke), through the policy itself, and the tick
schedule goes on; only for policies that ship behind an activator, and only with a router."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autoscaler.policy.registry import POLICY_NAMES, make_policy
from autoscaler.sim.nodes import NodeFleet
from autoscaler.sim.profile import ColdTier, load_profile
from autoscaler.sim.sensing import SensingConfig
from autoscaler.sim.simulator import ACTIVATED_POLICIES, SimConfig, Simulation, ModelSpec, has_activator, simulate
from autoscaler.sim.traces import Workload

STAGED_S = 20.0


def _workload(arrivals, end_s=400.0):
    a = np.asarray(arrivals, dtype=float)
    n = a.size
    return Workload("t", "m", a, np.full(n, 100, dtype=np.int64), np.full(n, 10, dtype=np.int64), 0.0, end_s)


def _profile():
    base = load_profile("h100-llama-3.1-8b")
    cs = base.cold_start.model_copy(update={"tiers": {"staged": ColdTier(engine_s=STAGED_S)}})
    return base.model_copy(update={"cold_start": cs})


def _config(**kw):
    kw.setdefault("sensing", SensingConfig(mode="direct", miss_rate=0.0))
    return SimConfig(nodes=NodeFleet(nodes=1, prestage=True), initial_replicas=0, **kw)


class Recorder:
    """Behind an activator; orders `order(obs)` replicas and records what it was asked."""

    name = "recorder"
    activator = True
    interval_s = 30.0

    def __init__(self, order=lambda obs: 0):
        self.order = order
        self.asked: list[tuple[float, float | None]] = []

    def decide(self, obs):
        self.asked.append((obs.time, obs.held_requests))
        return SimpleNamespace(desired=self.order(obs), reason="recorded")


def _warmscale(prof):
    return make_policy("warmscale", prof.to_capacity(), min_replicas=0, interval_s=30.0)


def test_a_held_request_makes_warmscale_order_a_replica_at_its_arrival():
    prof = _profile()
    w = _workload([10.0])
    on = simulate(w, _warmscale(prof), prof, _config())
    # ordered at 10 s by the poke, Ready a staged cold start later
    assert on.tier_starts == {"staged": 1}
    assert on.held_ttft_p50_s == pytest.approx(STAGED_S, abs=0.2)
    off = simulate(w, _warmscale(prof), prof, _config(activator=False))
    # without it, the order waits for the next decision at 30 s
    assert off.held_ttft_p50_s == pytest.approx(30.0 + STAGED_S - 10.0, abs=0.2)


def test_the_poke_asks_the_policy_with_the_held_count_and_keeps_the_tick_schedule():
    prof = _profile()
    pol = Recorder()          # orders nothing: nothing starts, so every held arrival pokes again
    res = simulate(_workload([10.0, 12.0], end_s=100.0), pol, prof, _config())
    assert res.tier_starts == {}
    pokes = [(t, h) for t, h in pol.asked if t in (10.0, 12.0)]
    assert pokes == [(10.0, 1.0), (12.0, 2.0)]
    assert [t for t, _ in pol.asked if t not in (10.0, 12.0)] == [30.0, 60.0, 90.0]


def test_no_poke_while_a_replica_is_starting():
    prof = _profile()
    pol = Recorder(order=lambda obs: 1 if (obs.held_requests or 0) > 0 else obs.current)
    sim = Simulation([ModelSpec(_workload([10.0, 11.0, 15.0]), pol, prof)], _config())
    res = sim.run()[0]
    assert sim.models[0].pokes == 1                     # the first arrival ordered one; the others wait for it
    assert res.tier_starts == {"staged": 1}
    assert res.held_ttft_p50_s == pytest.approx(STAGED_S - 1.0, abs=0.2)


@pytest.mark.parametrize("config", [dict(activator=False),
                                    dict(sensing=SensingConfig(mode="direct", miss_rate=0.0, router=False))])
def test_off_switch_and_no_router_mean_no_poke(config):
    prof = _profile()
    pol = Recorder()
    sim = Simulation([ModelSpec(_workload([10.0]), pol, prof)], _config(**config))
    sim.run()
    assert sim.models[0].pokes == 0
    assert [t for t, _ in pol.asked] == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0,
                                         330.0, 360.0, 390.0]


def test_which_peers_ship_behind_an_activator():
    cap = load_profile("h100-llama-3.1-8b").to_capacity()
    extra = {"static": {"replicas": 1}}
    got = {n for n in POLICY_NAMES if has_activator(make_policy(n, cap, **extra.get(n, {})))}
    assert got == ACTIVATED_POLICIES == {"warmscale", "knative"}
