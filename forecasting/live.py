"""Live demand forecasting for the controller (`spec.forecasting.enabled`) and local mode (a model's
`forecasting.enabled`).

Each tick the model's observed rates go to its `ForecastPrewarmer` (forecasting/prewarm.py), which
averages them into 10-minute windows (a day is the forecaster's 144-window period) and, as each
window closes, forecasts the demand one cold start ahead. The policy then sees the planner's floor
(`Observation.floor`: at least that many replicas until it expires) and, once a backtest chose the
forecast's members, the forecast itself (`Observation.forecast`).

Members whose library is not installed are left out (the controller's image and `pip install
warmscale` have the base install: no statsforecast, no LightGBM). The demand is the router's
arrival rate where there is one, else vLLM's finished-request rate.

The controller passes `run_refresh` (a single-thread executor's `submit`): a window close's fit and
forecast then run off its ticks, which at 1,000 models would otherwise carry every model's close in
one tick (bench/forecast_tick.py). It also keeps each forecaster's windows in the ModelAutoscaler's
status (`forecastHistory`, written when a window has closed since the last write), so a new leader
or a restarted controller forecasts on with the days of history it needs to backtest members,
instead of the last window with a band. Local mode keeps it in its state database the same way.
"""
from __future__ import annotations

import dataclasses

from autoscaler.contract import Observation
from forecasting.boosting import BoosterCache
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster, installed_members
from forecasting.planner import PlannerConfig, PrewarmPlanner
from forecasting.prewarm import ForecastPrewarmer

__all__ = ["WINDOW_S", "make_planner", "make_prewarmer", "with_forecast"]

WINDOW_S = 600.0
LIVE_BOOSTER_SETS = 2


def make_planner(capacity, quantile: str, min_replicas: int, max_replicas: int, target_utilization: float | None,
                 window_s: float = WINDOW_S) -> PrewarmPlanner:
    """Replicas are sized from the forecast token rates (vLLM's counters always give them); the
    request-rate bound uses the replica's rate for the smallest request (one prompt token, one
    generated), so that it binds only where no token rates are known. A floor lasts two windows.
    `target_utilization` None: the planner's default."""
    utilization = {} if target_utilization is None else {"target_utilisation": target_utilization}
    return PrewarmPlanner(PlannerConfig.from_capacity(
        capacity, 1.0, 1.0, quantile=quantile, min_replicas=min_replicas, max_replicas=max_replicas,
        hold_s=2 * window_s, **utilization))


def make_prewarmer(capacity, quantile: str, min_replicas: int, max_replicas: int, target_utilization: float | None,
                   window_s: float = WINDOW_S, run_refresh=None) -> ForecastPrewarmer:
    """A prewarmer for one model, forecasting one cold start (the capacity's) ahead; `run_refresh`
    as in ForecastPrewarmer (None: fits run in the observing call)."""
    planner = make_planner(capacity, quantile, min_replicas, max_replicas, target_utilization, window_s)
    # A live refit reuses at most two trained booster sets (scoring members, forecasting) until its
    # training history moves to the next block; older ones are never used again. Eight would hold
    # ~4.4 MB per model: 4.4 GB for a controller of 1,000 forecasting models (bench/forecast_tick.py).
    forecaster = EnsembleForecaster(EnsembleConfig(members=installed_members()), BoosterCache(capacity=LIVE_BOOSTER_SETS))
    return ForecastPrewarmer(planner, forecaster, window_s=window_s, cold_start_s=capacity.cold_start_s,
                             stagger_refits=True, run_refresh=run_refresh)


def with_forecast(prewarmer: ForecastPrewarmer, obs: Observation) -> Observation:
    """Record `obs`'s rates (when it has them) and return it with the floor and forecast for now."""
    demand = obs.arrival_rate if obs.arrival_rate is not None else obs.request_rate
    if demand is not None and obs.prompt_token_rate is not None and obs.generation_token_rate is not None:
        prewarmer.observe(obs.model, obs.metrics_time or obs.time, demand, obs.prompt_token_rate,
                          obs.generation_token_rate)
    return dataclasses.replace(obs, floor=prewarmer.floor(obs.model, obs.time),
                               forecast=prewarmer.forecast(obs.model, obs.time))
