"""What local mode builds for a model before any engine starts: its rates are taken over the window
the model's policy is configured for, as the controller does."""
from __future__ import annotations

import pytest

from autoscaler.local.config import load_config
from autoscaler.local.runner import LocalRunner
from tests.local.conftest import model_entry, write_config


@pytest.mark.parametrize("settings, window", [({}, 60.0), ({"rate_window_s": 10}, 10.0)])
def test_rates_are_taken_over_the_policy_rate_window(tmp_path, settings, window):
    cfg = write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"), router={"port": 0},
                       models=[model_entry(tmp_path, policy={"settings": settings})])
    runner = LocalRunner(load_config(cfg))
    runner.open()
    try:
        assert runner.models["tiny"].builder.rate_window_s == window
    finally:
        runner.stop(drain_s=0)


def test_a_model_with_forecasting_feeds_its_forecaster_and_observes_with_its_floor(tmp_path):
    from autoscaler.contract import Observation
    from autoscaler.metrics.observe import Reading

    cfg = write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"), router={"port": 0},
                       models=[model_entry(tmp_path, max_replicas=4, forecasting={"enabled": True})])
    runner = LocalRunner(load_config(cfg))
    runner.open()
    try:
        model = runner.models["tiny"]
        assert model.prewarmer is not None and model.prewarmer.planner.config.max_replicas == 4
        # what the engines' scrapes and the router's arrivals give: 2 requests/s of 200 + 50 tokens
        model.builder.build = lambda now, *a, **k: Reading(Observation(
            "tiny", now, 1, 0, 0.0, 2.0, 0.1, 2.0, 400.0, 100.0, arrival_rate=2.0, held_requests=0.0))
        t0 = 1_000_000.0
        for k in range(0, 660, 5):             # 11 minutes of ticks: a 10-minute window closes
            runner._observe(model, t0 + k)
        assert model.observation.floor is not None and model.observation.floor.replicas >= 1
        assert model.prewarmer.demand_forecast("tiny", t0 + 655).request_rate_p50 == pytest.approx(2.0)
    finally:
        runner.stop(drain_s=0)


def test_a_restarted_local_mode_forecasts_on_from_the_windows_it_saved(tmp_path):
    from autoscaler.contract import Observation
    from autoscaler.metrics.observe import Reading

    cfg = load_config(write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"), router={"port": 0},
                                   models=[model_entry(tmp_path, forecasting={"enabled": True})]))
    t0 = 1_000_000.0
    first = LocalRunner(cfg)
    first.open()
    try:
        model = first.models["tiny"]
        model.builder.build = lambda now, *a, **k: Reading(Observation(
            "tiny", now, 1, 0, 0.0, 2.0, 0.1, 2.0, 400.0, 100.0, arrival_rate=2.0, held_requests=0.0))
        for k in range(0, 1860, 30):           # 31 minutes: three windows close
            first._observe(model, t0 + k)
        saved = model.prewarmer.history("tiny")
    finally:
        first.stop(drain_s=0)
    assert len(saved["rates"]) == 3
    second = LocalRunner(cfg)
    second.open()
    try:
        assert second.models["tiny"].prewarmer.history("tiny") == saved
    finally:
        second.stop(drain_s=0)


def test_a_saved_history_that_cannot_be_read_is_an_event_and_the_forecaster_starts_again(tmp_path):
    from autoscaler.local.state import LocalState

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    previous = LocalState(state_dir / "local.db")
    previous.save_forecast_history("tiny", {"window_s": 60.0, "rates": []}, 0.0)
    previous.close()
    cfg = write_config(tmp_path / "local.yaml", state_dir=str(state_dir), router={"port": 0},
                       models=[model_entry(tmp_path, forecasting={"enabled": True})])
    runner = LocalRunner(load_config(cfg))
    runner.open()
    try:
        assert runner.models["tiny"].prewarmer.history("tiny") is None
        events = [e for e in runner.state.events("tiny") if e["kind"] == "forecast_history_unreadable"]
        assert events and "window_s" in events[0]["error"]
    finally:
        runner.stop(drain_s=0)


def test_forecasting_is_off_unless_the_model_asks(tmp_path):
    cfg = write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"), router={"port": 0},
                       models=[model_entry(tmp_path)])
    runner = LocalRunner(load_config(cfg))
    runner.open()
    try:
        assert runner.models["tiny"].prewarmer is None
    finally:
        runner.stop(drain_s=0)
