"""Planner arithmetic against hand-computed values."""

import pytest
from pydantic import ValidationError

from forecasting.planner import KnownEvent, PlannerConfig, PrewarmPlanner
from forecasting.types import DemandForecast


def forecast(p50=8.0, p90=10.0, prompt=None, generation=None, target=1180.0):
    return DemandForecast("m", 1000.0, target, p50, p90, prompt, generation, "ensemble:test")


def test_p90_rate_over_per_replica_capacity_at_target_utilisation():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.5, target_utilisation=0.8))
    # 10 req/s / (2.5 x 0.8) = 5 exactly: no float noise may push it to 6.
    assert planner.replicas_for(forecast(p90=10.0)).replicas == 5
    # 10.1 / 2 = 5.05 -> 6
    assert planner.replicas_for(forecast(p90=10.1)).replicas == 6


def test_p50_quantile_can_be_chosen():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0, target_utilisation=1.0, quantile="p50"))
    assert planner.replicas_for(forecast(p50=7.0, p90=100.0)).replicas == 4  # ceil(7 / 2)


def test_token_rate_binds_when_it_needs_more_replicas():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=10.0, generation_tokens_per_replica=1000.0, target_utilisation=0.5))
    need = planner.replicas_for(forecast(p90=4.0, generation=2600.0))
    # requests: 4 / (10 x 0.5) = 0.8 -> 1; generated tokens: 2600 / (1000 x 0.5) = 5.2 -> 6
    assert need.replicas == 6
    assert need.binding_rate == "generation_tokens"


def test_min_and_max_replicas_clamp_the_floor():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=1.0, target_utilisation=1.0, min_replicas=2, max_replicas=5))
    assert planner.replicas_for(forecast(p90=0.0)).replicas == 2
    assert planner.replicas_for(forecast(p90=12.0)).replicas == 5


def test_floor_carries_reason_lead_and_expiry():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0, target_utilisation=0.5, hold_s=300))
    floor = planner.floor("m", forecast(p90=9.0, target=1180.0), now=1000.0, cold_start_s=180.0)
    assert floor.replicas == 9  # ceil(9 / 1)
    assert floor.expires_at == 1300.0
    assert floor.reason.startswith("forecast_floor:")
    assert "t+180s" in floor.reason and "cold start 180s" in floor.reason


def test_known_event_floor_starts_one_cold_start_early_and_ends_with_the_event():
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0))
    planner.add_event(KnownEvent(model="m", start=5000, end=6000, replicas=7, reason="launch"))
    assert planner.floor("m", None, now=4700, cold_start_s=200) is None
    early = planner.floor("m", None, now=4800, cold_start_s=200)
    assert early.replicas == 7 and early.expires_at == 6000 and "launch" in early.reason
    assert planner.floor("other", None, now=4800, cold_start_s=200) is None
    assert planner.floor("m", None, now=6000, cold_start_s=200) is None
    # The higher of forecast and event wins.
    assert planner.floor("m", forecast(p90=40.0), now=5500, cold_start_s=200).replicas == 25


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValidationError, match="requests_per_replica"):
        PlannerConfig(requests_per_replica=0)
    with pytest.raises(ValidationError, match="target_utilisation"):
        PlannerConfig(requests_per_replica=1, target_utilisation=1.5)
    with pytest.raises(ValidationError, match=r"max_replicas \(1\) is below min_replicas \(3\)"):
        PlannerConfig(requests_per_replica=1, min_replicas=3, max_replicas=1)
    with pytest.raises(ValidationError, match="end"):
        KnownEvent(model="m", start=10, end=10, replicas=1)
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=1))
    with pytest.raises(ValueError, match="finite rate >= 0, got nan"):
        planner.replicas_for(forecast(p90=float("nan")))
    with pytest.raises(ValueError, match="finite rate >= 0, got -1.0"):
        planner.replicas_for(forecast(p90=-1.0))
    with pytest.raises(ValueError, match="cold_start_s"):
        planner.floor("m", forecast(), now=0, cold_start_s=-5)
    with pytest.raises(ValueError, match="not 'x'"):
        planner.floor("x", forecast(), now=0, cold_start_s=5)


def test_planner_sizes_with_the_one_capacity_model():
    from autoscaler.sim.profile import load_profile

    cap = load_profile().to_capacity()
    cfg = PlannerConfig.from_capacity(cap, 1000.0, 200.0, target_utilisation=1.0)
    assert cfg.requests_per_replica == cap.sustainable_rate(1000.0, 200.0)
    assert (cfg.prompt_tokens_per_replica, cfg.generation_tokens_per_replica) == (cap.prefill_tokens_per_s,
                                                                                  cap.decode_tokens_per_s)
    rate = 3.5 * cfg.requests_per_replica
    fc = DemandForecast("m", 0.0, 60.0, rate, rate)
    assert PrewarmPlanner(cfg).replicas_for(fc).replicas == 4
