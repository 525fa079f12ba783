import math
import threading

import numpy as np
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from forecasting.boosting import BoosterCache
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster
from forecasting.events import EventScheduler
from forecasting.live import LIVE_BOOSTER_SETS
from forecasting.planner import KnownEvent, PlannerConfig, PrewarmPlanner
from forecasting.prewarm import ForecastPrewarmer

WINDOW = 60.0


def make_prewarmer(**kwargs):
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0, target_utilisation=1.0, hold_s=120))
    config = EnsembleConfig(horizon=4, period=24, selection_windows=24, calibration_windows=24)
    defaults = dict(window_s=WINDOW, cold_start_s={"m": 150.0}, refit_every_windows=3)
    defaults.update(kwargs)
    return ForecastPrewarmer(planner, EnsembleForecaster(config), **defaults)


def feed(prewarmer, rates, per_window=4, model="m", start=0.0):
    for i, rate in enumerate(rates):
        for k in range(per_window):
            t = start + i * WINDOW + k * WINDOW / per_window
            prewarmer.observe(model, t, rate, rate * 100, rate * 10)


def test_no_floor_before_the_first_window_completes():
    p = make_prewarmer()
    feed(p, [5.0])  # samples only inside window 0
    assert p.floor("m", now=59.0) is None
    assert p.forecast("m", now=59.0) is None


def test_samples_average_into_windows_and_missing_windows_become_gaps():
    p = make_prewarmer()
    p.observe("m", 0.0, 2.0, 0, 0)
    p.observe("m", 30.0, 4.0, 0, 0)
    p.observe("m", 200.0, 8.0, 0, 0)  # windows 1 and 2 had no scrape
    state = p._models["m"]
    assert state.rates[0] == 3.0 and math.isnan(state.rates[1]) and math.isnan(state.rates[2])


def test_steady_demand_gives_the_hand_computed_floor():
    p = make_prewarmer()
    feed(p, [6.0] * 80)
    p.observe("m", 80 * WINDOW, 6.0, 600.0, 60.0)  # closes window 79
    fc = p.forecast("m", now=80 * WINDOW)
    assert fc.target_time == 80 * WINDOW + 150.0
    assert fc.request_rate_p50 == pytest.approx(6.0)
    assert fc.prompt_tokens_p90 == pytest.approx(fc.request_rate_p90 * 100)
    floor = p.floor("m", now=80 * WINDOW)
    assert floor.replicas == 3  # ceil(6 / 2), a constant series has a zero-width band
    assert floor.reason.startswith("forecast_floor:")


def test_a_daily_ramp_is_anticipated_one_cold_start_ahead():
    # 24 windows a day; demand ramps from 4 to 20 req/s at the same hour every day.
    day = np.array([4.0] * 12 + [8.0, 14.0, 20.0] + [20.0] * 6 + [12.0, 6.0, 4.0])
    p = make_prewarmer(cold_start_s=3 * WINDOW)
    history = np.tile(day, 8)
    feed(p, history[: 7 * 24 + 11])
    p.observe("m", (7 * 24 + 11) * WINDOW, 4.0, 400, 40)
    now = (7 * 24 + 11) * WINDOW
    floor = p.floor("m", now)
    # Three windows ahead the rate is 14 req/s: a reactive policy would still see 4 req/s (2 replicas).
    assert floor.replicas >= 7


def test_invalid_observations_are_rejected():
    p = make_prewarmer()
    with pytest.raises(ValueError, match="request_rate for model 'm' must be a finite rate >= 0, got nan"):
        p.observe("m", 0.0, float("nan"), 0.0, 0.0)
    with pytest.raises(ValueError, match="generation_token_rate"):
        p.observe("m", 0.0, 1.0, 0.0, -2.0)
    with pytest.raises(ValueError, match="window_s"):
        make_prewarmer(window_s=0)


def test_history_is_bounded_and_trimmed_in_blocks():
    p = make_prewarmer(history_windows=50, trim_every_windows=10)
    lengths = []
    for i in range(120):
        feed(p, [3.0], per_window=1, start=i * WINDOW)
        lengths.append(len(p._models["m"].rates))
    assert max(lengths) == 50 + 10 - 1
    assert min(lengths[60:]) == 50
    assert p.forecast("m", now=120 * WINDOW) is not None


@pytest.mark.parametrize("booster_sets", [8, LIVE_BOOSTER_SETS])   # the cache's default, and what live forecasting keeps
def test_a_full_history_reuses_the_gradient_boosting_models_between_refits(monkeypatch, booster_sets):
    from forecasting.boosting import GradientBoostingMember

    trained = []
    original = GradientBoostingMember._train
    monkeypatch.setattr(GradientBoostingMember, "_train", lambda self, h, n: trained.append(1) or original(self, h, n))
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0))
    config = EnsembleConfig(horizon=2, period=24, selection_windows=24, calibration_windows=24,
                            members=("naive", "gradient_boosting"))
    p = ForecastPrewarmer(planner, EnsembleForecaster(config, BoosterCache(capacity=booster_sets)), window_s=WINDOW,
                          cold_start_s=60.0, refit_every_windows=3, history_windows=5 * 24, trim_every_windows=36)
    daily = 10 + 5 * np.sin(2 * np.pi * np.arange(10 * 24) / 24)
    feed(p, daily[: 8 * 24], per_window=1)  # the history is full from here on
    trained.clear()
    feed(p, daily[8 * 24 : 8 * 24 + 36], per_window=1, start=8 * 24 * WINDOW)
    # 12 refits over 36 windows; the boosters are retrained only when the training history moves
    # to a new block (two models per refit: one to score members, one to forecast).
    assert 0 < len(trained) <= 2 * 3


def test_scheduled_event_fires_a_prewarm_job_one_cold_start_early():
    import time

    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=1.0))
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    fired = threading.Event()
    received = []
    try:
        events = EventScheduler(planner, scheduler, cold_start_s=lambda model: 5.0,
                                on_prewarm=lambda e: (received.append(e), fired.set()))
        now = time.time()
        event = KnownEvent(model="m", start=now + 5.3, end=now + 60, replicas=4, reason="launch")
        jobs = events.schedule(event)
        assert len(jobs) == 2
        assert fired.wait(timeout=5.0)
        # Let the scheduler thread finish retiring the fired job before shutting it down.
        deadline = time.time() + 5.0
        while any(job.id == jobs[0] for job in scheduler.get_jobs()) and time.time() < deadline:
            time.sleep(0.01)
        assert received == [event]
        assert planner.floor("m", None, now=time.time(), cold_start_s=5.0).replicas == 4
    finally:
        scheduler.shutdown(wait=False)


def test_a_fallback_forecast_gives_a_floor_but_is_not_shared_with_the_policy():
    p = make_prewarmer()
    feed(p, [4.0] * 10)  # 10 windows: too few to score members (selection span 24)
    p.observe("m", 10 * WINDOW, 4.0, 400.0, 40.0)
    assert p.demand_forecast("m", now=10 * WINDOW).method.startswith("fallback")
    assert p.forecast("m", now=10 * WINDOW) is None
    assert p.floor("m", now=10 * WINDOW).replicas == 2  # ceil(4 / 2): a constant series, zero-width band


def test_a_fallback_forecast_is_shared_when_asked_for():
    p = make_prewarmer(share_fallback_forecast=True)
    feed(p, [4.0] * 10)
    p.observe("m", 10 * WINDOW, 4.0, 400.0, 40.0)
    fc = p.forecast("m", now=10 * WINDOW)
    assert fc is not None and fc.method.startswith("fallback") and fc.request_rate_p90 == pytest.approx(4.0)


def test_a_backtested_forecast_is_shared():
    p = make_prewarmer()
    feed(p, [6.0] * 80)
    p.observe("m", 80 * WINDOW, 6.0, 600.0, 60.0)
    fc = p.forecast("m", now=80 * WINDOW)
    assert fc is not None and fc.method.startswith("ensemble:")


def test_each_models_refit_learns_from_every_model_on_its_windows(monkeypatch):
    from forecasting.boosting import GradientBoostingMember

    seen = []
    original = GradientBoostingMember._train
    monkeypatch.setattr(GradientBoostingMember, "_train", lambda self, h, n: seen.append(h.copy()) or original(self, h, n))
    planner = PrewarmPlanner(PlannerConfig(requests_per_replica=2.0))
    config = EnsembleConfig(horizon=2, period=24, selection_windows=24, calibration_windows=24,
                            members=("naive", "gradient_boosting"))
    p = ForecastPrewarmer(planner, EnsembleForecaster(config), window_s=WINDOW, cold_start_s=60.0, refit_every_windows=3)
    daily = 10 + 5 * np.sin(2 * np.pi * np.arange(7 * 24) / 24)
    feed(p, daily, per_window=1, model="big")
    seen.clear()
    # A second model that starts a day later: its refits see "big" on the same windows.
    for i in range(24, 7 * 24):
        feed(p, [daily[i] / 10], per_window=1, model="small", start=i * WINDOW)
    assert seen, "the global member was never trained for the second model"
    history = seen[-1]
    assert history.shape[0] == 2
    small = p._models["small"]
    window = small.first_window + 5  # any window both models observed
    row_of = {name: k for k, name in enumerate(p._models)}
    assert history[row_of["big"], 5] == pytest.approx(daily[window])
    assert history[row_of["small"], 5] == pytest.approx(daily[window] / 10)
