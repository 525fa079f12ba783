"""`spec.forecasting.enabled` in the controller: the model's rates go to its forecaster each tick,
the policy sees the planner's floor, and a spec edit keeps the history."""
from __future__ import annotations

import dataclasses

import pytest

from autoscaler.contract import Observation, Signal
from autoscaler.metrics.observe import Reading
from autoscaler.policy.capacity import H100_LLAMA3_8B
from forecasting.live import WINDOW_S, make_prewarmer, with_forecast
from tests.unit.test_controller_loop import _fake_api, _object, _pods, _spec

T0 = 1_000_000.0
PROMPT_PER_REQUEST, OUTPUT_PER_REQUEST = 1000.0, 250.0


def _busy(t: float, rate: float, ready: int = 1) -> Observation:
    return Observation(model="m", time=t, ready_replicas=ready, loading_replicas=0, waiting_requests=0.0,
                       running_requests=rate, kv_cache_usage=0.2, request_rate=rate,
                       prompt_token_rate=rate * PROMPT_PER_REQUEST, generation_token_rate=rate * OUTPUT_PER_REQUEST)


def _replicas_for(rate: float, utilization: float) -> float:
    cap = H100_LLAMA3_8B
    return max(rate * PROMPT_PER_REQUEST / cap.prefill_tokens_per_s,
               rate * OUTPUT_PER_REQUEST / cap.decode_tokens_per_s) / utilization


def test_a_closed_window_gives_a_floor_sized_from_its_token_rates():
    prewarmer = make_prewarmer(H100_LLAMA3_8B, "p90", 0, 100, 0.8, window_s=60.0)
    assert with_forecast(prewarmer, _busy(T0, 20.0)).floor is None       # no window closed yet
    obs = None
    for k in range(1, 30):                                                # 145 s: two windows closed
        obs = with_forecast(prewarmer, _busy(T0 + 5 * k, 20.0))
    assert obs.floor is not None and obs.floor.expires_at > obs.time
    # the fallback forecast (too little history to backtest) is the last window with a 25 % band
    assert obs.floor.replicas >= _replicas_for(20.0, 0.8)
    assert obs.floor.replicas <= _replicas_for(20.0 * 1.25, 0.8) + 1


def test_an_observation_without_rates_is_not_recorded():
    prewarmer = make_prewarmer(H100_LLAMA3_8B, "p90", 0, 100, 0.8, window_s=60.0)
    empty = dataclasses.replace(_busy(T0, 20.0), request_rate=None)
    for k in range(30):
        assert with_forecast(prewarmer, dataclasses.replace(empty, time=T0 + 5 * k)).floor is None


def _forecasting_spec(**extra) -> dict:
    return _spec(**{"forecasting": {"enabled": True, "quantile": "p90"}, "maxReplicas": 40, **extra})


def test_forecasting_is_on_only_where_the_spec_asks_and_an_edit_keeps_the_history(controller):
    assert controller._model(_object(_spec())).prewarmer is None
    obj = _object(_forecasting_spec(), name="fc")
    first = controller._model(obj).prewarmer
    assert first is not None
    edited = {**obj, "metadata": {**obj["metadata"], "generation": 2}, "spec": _forecasting_spec(maxReplicas=3)}
    again = controller._model(edited).prewarmer
    assert again is first and again.planner.config.max_replicas == 3


def test_each_tick_feeds_the_forecaster_and_the_policy_decides_with_its_floor(controller):
    scales, _ = _fake_api(controller, replicas=1)
    obj, index, rate = _object(_forecasting_spec()), _pods(["engine"]), 30.0
    model = controller._model(obj)
    seen = []
    decide = model.policy.decide
    model.policy.decide = lambda obs: seen.append((obs, decide(obs))) or seen[-1][1]
    controller._read_metrics = lambda rounds, now: {
        r.key: Reading(_busy(now, rate, ready=scales.replicas.get("engine", 1)), source="direct") for r in rounds}
    ticks = int(1.5 * WINDOW_S / 5)
    for k in range(ticks):                                   # a 600 s window closes
        now = T0 + 5 * k
        rnd = controller._prepare(obj, index)
        controller._tick_guarded(rnd, controller._read_metrics([rnd], now)[rnd.key], [], now)
    assert len(seen) == ticks
    first_close = (T0 // WINDOW_S + 1) * WINDOW_S             # windows are aligned on the clock
    assert all(obs.floor is None for obs, _ in seen if obs.time < first_close)
    controller._forecasts.submit(lambda: None).result(timeout=30)   # the close's forecast, fitted off the tick, has landed
    controller._tick_guarded(rnd, controller._read_metrics([rnd], now + 5)[rnd.key], [], now + 5)
    obs, decision = seen[-1]
    assert obs.floor is not None and obs.floor.replicas >= _replicas_for(rate, 0.8)
    assert decision.explain.need[Signal.FLOOR] == obs.floor.replicas
    assert decision.desired >= obs.floor.replicas


def test_the_controller_forecasts_with_the_members_its_install_has(monkeypatch):
    import importlib.util

    from forecasting.ensemble import DEFAULT_MEMBERS, MEMBER_LIBRARIES

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("statsforecast", "lightgbm") else real(name, *a))
    members = make_prewarmer(H100_LLAMA3_8B, "p90", 0, 10, 0.8).forecaster.config.members
    assert members and not set(members) & set(MEMBER_LIBRARIES)
    assert set(members) == set(DEFAULT_MEMBERS) - set(MEMBER_LIBRARIES)


def test_models_refit_on_different_windows_so_no_tick_carries_every_refit():
    prewarmer = make_prewarmer(H100_LLAMA3_8B, "p90", 0, 10, 0.8, window_s=60.0)
    fits = []
    fit = prewarmer.forecaster.fit
    prewarmer.forecaster.fit = lambda y, **kw: fits.append(len(y)) or fit(y, **kw)
    models = [f"model-{i}" for i in range(60)]
    per_window = []
    for w in range(1, 40):                       # every model closes the same windows, on one clock
        before = len(fits)
        for m in models:
            prewarmer.observe(m, T0 + 60 * w, 1.0, 100.0, 10.0)
        per_window.append(len(fits) - before)
    steady = per_window[10:]                      # after every model's first fit
    every = prewarmer.refit_every_windows
    assert sum(steady) == pytest.approx(len(models) * len(steady) / every, rel=0.2)
    assert max(steady) <= 2 * len(models) / every  # spread, not all 60 on one window
