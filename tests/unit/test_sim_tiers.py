"""Cold-start tiers in the simulator: nodes with state, the warmest node first, asleep engines charged."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autoscaler.sim.nodes import NodeFleet, fleet_for_tier
from autoscaler.sim.profile import ColdStart, ColdTier, load_profile
from autoscaler.sim.simulator import ModelSpec, SimConfig, Simulation, simulate
from autoscaler.sim.traces import Workload


class Scripted:
    """desired(t) from a list of (from_time, replicas); ticks every second."""

    name = "scripted"
    interval_s = 1.0
    initial_replicas = 0

    def __init__(self, plan):
        self.plan = sorted(plan)

    def decide(self, obs):
        d = 0
        for t0, n in self.plan:
            if obs.time >= t0:
                d = n
        return SimpleNamespace(desired=d, reason="scripted")


def _workload(model="m", arrivals=(), end_s=400.0):
    a = np.asarray(arrivals, dtype=float)
    n = a.size
    return Workload("t", model, a, np.full(n, 100, dtype=np.int64), np.full(n, 10, dtype=np.int64), 0.0, end_s)


def _profile(**tiers):
    base = load_profile("h100-llama-3.1-8b")
    cs = base.cold_start.model_copy(update={"tiers": {k: ColdTier(**v) for k, v in tiers.items()}})
    return base.model_copy(update={"cold_start": cs})


TIERS4 = dict(cold={"image_pull_s": 100, "engine_s": 20}, image={"engine_s": 20, "weights_s": 10},
              staged={"engine_s": 20}, asleep={"wake_s": 1})


def _direct():
    from autoscaler.sim.sensing import SensingConfig

    return SensingConfig(mode="direct", miss_rate=0.0)


def test_without_nodes_the_single_number_is_used_as_before():
    prof = _profile(**TIERS4)
    w = _workload(arrivals=[50.0])
    res = simulate(w, Scripted([(10, 1)]), prof, SimConfig(sensing=_direct()))
    # one replica ordered at t=10 is Ready after total_s (31.03 s), not after any tier's time
    assert res.tier_starts == {}
    assert res.gpu_hours * 3600 == pytest.approx(400 - 10, abs=1e-6)
    assert res.held_requests == 0     # Ready at 41.03, before the request at 50


@pytest.mark.parametrize("fleet,tier,ready_after", [
    (NodeFleet(nodes=1, image_cached=False, keep_image=False), "cold", 120.0),
    (NodeFleet(nodes=1, image_cached=True), "image", 30.0),
    (NodeFleet(nodes=1, prestage=True), "staged", 20.0),
])
def test_a_start_takes_its_tier_cold_start(fleet, tier, ready_after):
    prof = _profile(**TIERS4)
    w = _workload(arrivals=[10.0], end_s=400.0)
    res = simulate(w, Scripted([(5, 1)]), prof, SimConfig(sensing=_direct(), nodes=fleet))
    assert res.tier_starts == {tier: 1}
    # the held request is served once the replica is Ready: 5 + the tier's cold start
    assert res.held_requests == 1
    assert res.held_ttft_p50_s == pytest.approx(5 + ready_after - 10, abs=0.2)


def test_scale_up_lands_on_the_warmest_node_first():
    prof = _profile(**TIERS4)
    w = _workload(arrivals=[], end_s=300.0)
    fleet = NodeFleet(nodes=3, gpus_per_node=1, image_cached=True, keep_weights=False)
    sim = Simulation([ModelSpec(w, Scripted([(5, 1)]), prof)], SimConfig(sensing=_direct(), nodes=fleet))
    sim.nodes[0].image = False
    sim.nodes[2].stage("m", None)          # only node 2 has the weights
    res = sim.run()[0]
    assert res.tier_starts == {"staged": 1}
    r = sim.models[0].ready[0]
    assert r.node.idx == 2


def test_warmest_means_shortest_start_in_the_profile():
    # a profile whose staged tier is slower than pulling from object storage (as on the CPU ladder)
    prof = _profile(cold={"engine_s": 50}, image={"engine_s": 20}, staged={"engine_s": 25})
    w = _workload(arrivals=[], end_s=300.0)
    fleet = NodeFleet(nodes=2, gpus_per_node=1, image_cached=True, keep_weights=False)
    sim = Simulation([ModelSpec(w, Scripted([(5, 1)]), prof)], SimConfig(sensing=_direct(), nodes=fleet))
    sim.nodes[0].stage("m", None)
    res = sim.run()[0]
    assert res.tier_starts == {"image": 1}
    assert sim.models[0].ready[0].node.idx == 1


def test_asleep_engines_hold_and_are_charged_for_their_gpus_and_wake_in_place():
    prof = _profile(**TIERS4)
    w = _workload(arrivals=[], end_s=400.0)
    plan = [(5, 1), (100, 0), (200, 1)]
    fleet = NodeFleet(nodes=1, gpus_per_node=1, prestage=True, sleep_s=1000.0)
    res = simulate(w, Scripted(plan), prof, SimConfig(sensing=_direct(), nodes=fleet))
    # started (staged) at 5, asleep from 100, woken at 200, held to the end: GPU time 5..400, no gap
    assert res.tier_starts == {"staged": 1, "asleep": 1}
    assert res.gpu_hours * 3600 == pytest.approx(400 - 5, abs=1e-6)
    # without sleep mode the GPU is free between 100 and 200, and the restart pays the staged tier
    fleet0 = NodeFleet(nodes=1, gpus_per_node=1, prestage=True, sleep_s=0.0)
    res0 = simulate(w, Scripted(plan), prof, SimConfig(sensing=_direct(), nodes=fleet0))
    assert res0.tier_starts == {"staged": 2}
    assert res0.gpu_hours * 3600 == pytest.approx((100 - 5) + (400 - 200), abs=1e-6)


def test_asleep_engine_exits_after_sleep_s_and_is_charged_until_then():
    prof = _profile(**TIERS4)
    w = _workload(arrivals=[], end_s=400.0)
    fleet = NodeFleet(nodes=1, gpus_per_node=1, prestage=True, sleep_s=50.0)
    res = simulate(w, Scripted([(5, 1), (100, 0)]), prof, SimConfig(sensing=_direct(), nodes=fleet))
    assert res.gpu_hours * 3600 == pytest.approx(150 - 5, abs=1e-6)


def test_an_asleep_engine_of_another_model_is_evicted_for_a_start():
    prof = _profile(**TIERS4)
    wa = _workload("a", arrivals=[], end_s=400.0)
    wb = _workload("b", arrivals=[], end_s=400.0)
    fleet = NodeFleet(nodes=1, gpus_per_node=1, prestage=True, sleep_s=1000.0)
    sim = Simulation([ModelSpec(wa, Scripted([(5, 1), (100, 0)]), prof),
                      ModelSpec(wb, Scripted([(150, 1)]), prof)], SimConfig(sensing=_direct(), nodes=fleet))
    ra, rb = sim.run()
    # a sleeps from 100 until b's start at 150 evicts it; b starts on the freed GPU at once
    assert ra.gpu_hours * 3600 == pytest.approx(150 - 5, abs=1e-6)
    assert rb.gpu_hours * 3600 == pytest.approx(400 - 150, abs=1e-6)
    assert rb.tier_starts == {"staged": 1}


def test_no_free_gpu_and_none_asleep_leaves_the_start_pending():
    prof = _profile(**TIERS4)
    wa = _workload("a", arrivals=[], end_s=400.0)
    wb = _workload("b", arrivals=[], end_s=400.0)
    fleet = NodeFleet(nodes=1, gpus_per_node=1, prestage=True)
    ra, rb = Simulation([ModelSpec(wa, Scripted([(5, 1), (100, 0)]), prof),
                         ModelSpec(wb, Scripted([(50, 1)]), prof)], SimConfig(sensing=_direct(), nodes=fleet)).run()
    # b waits for a's GPU (free at 100) and then starts
    assert rb.gpu_hours * 3600 == pytest.approx(400 - 100, abs=1e-6)
    assert ra.gpu_hours * 3600 == pytest.approx(100 - 5, abs=1e-6)


def test_a_profile_without_sleep_mode_never_sleeps():
    prof = _profile(cold={"engine_s": 40}, image={"engine_s": 40}, staged={"engine_s": 30})
    w = _workload(arrivals=[], end_s=400.0)
    fleet = NodeFleet(nodes=1, gpus_per_node=1, prestage=True, sleep_s=1000.0)
    res = simulate(w, Scripted([(5, 1), (100, 0), (200, 1)]), prof, SimConfig(sensing=_direct(), nodes=fleet))
    assert res.tier_starts == {"staged": 2}
    assert res.gpu_hours * 3600 == pytest.approx((100 - 5) + (400 - 200), abs=1e-6)


def test_fleet_presets_land_on_their_tier():
    for tier in ("cold", "image", "staged"):
        f = fleet_for_tier(tier, nodes=2)
        prof = _profile(**TIERS4)
        res = simulate(_workload(arrivals=[], end_s=300.0), Scripted([(5, 1), (100, 0), (150, 1)]), prof,
                       SimConfig(sensing=_direct(), nodes=f))
        assert res.tier_starts == {tier: 2}
    res = simulate(_workload(arrivals=[], end_s=300.0), Scripted([(5, 1), (100, 0), (150, 1)]), _profile(**TIERS4),
                   SimConfig(sensing=_direct(), nodes=fleet_for_tier("asleep", nodes=2)))
    assert res.tier_starts == {"staged": 1, "asleep": 1}


def test_profiles_give_their_tiers():
    h = load_profile("h100-llama-3.1-8b").cold_start
    assert h.tier_s("asleep") < h.tier_s("staged") < h.tier_s("image") < h.tier_s("cold")
    assert h.total_s == pytest.approx(31.03)
    c = load_profile("tiny-llama-cpu").cold_start
    assert not c.has_tier("asleep")          # vLLM refuses sleep mode on CPU (ladder tier g)
    assert c.tier_s("image") == pytest.approx(48.86)
    with pytest.raises(ValueError):
        ColdStart(scheduling_s=0, image_pull_s=0, weights_gb=0, loader_gbps=1, warmup_s=0, tiers={"lukewarm": ColdTier()})
