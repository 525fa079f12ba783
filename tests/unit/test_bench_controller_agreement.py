"""The sim/live agreement benchmark scores the two sides where both have settled: the simulator's
rates in the scored slice are the demand's, not the ramp of a rate window filling from empty."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import controller_agreement as bench  # noqa: E402


@pytest.fixture(scope="module")
def scored_sim():
    profile, scored, replay = bench.load_slice("azure-conv", "20m:22m", 10.0, 0, 360.0)
    ticks = bench.run_simulator(replay, profile, bench.autoscaler_spec(profile, "sim", 20), 5.0,
                                bench.initial_replicas(replay, profile))
    return scored, replay, bench.scored_ticks(ticks, scored.start_s)


def test_the_replay_is_the_slice_after_a_warmup_at_the_slice_scale(scored_sim):
    scored, replay, ticks = scored_sim
    assert replay.start_s == scored.start_s - 360.0 and replay.scale == scored.scale
    assert ticks and ticks[0]["t"] >= scored.start_s and ticks[-1]["t"] <= scored.start_s + scored.duration_s


def test_the_simulators_rate_in_the_scored_slice_is_the_demand_not_a_filling_window(scored_sim):
    """From a cold start (no warm-up) the simulator's first-minute rate ramps from ~0 (Prometheus'
    rate() over a window still empty), warmscale's trend reads the ramp as rising demand and the
    stable window holds what it ordered: the benchmark then scored that start-up, not the controller."""
    scored, replay, ticks = scored_sim
    arrivals = np.asarray(replay.arrival)
    for tick in ticks[:12]:                       # the scored slice's first minute
        demand = ((arrivals > tick["t"] - 60.0) & (arrivals <= tick["t"])).sum() / 60.0
        assert tick["request_rate"] == pytest.approx(demand, rel=0.25), tick
