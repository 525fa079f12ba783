"""`ForecastPrewarmer`: the object the controller and the simulator call each control interval.

`observe()` receives the scraped rates of a model; samples are averaged into windows of `window_s`
seconds (a window with no sample is a gap). When a window completes, the model's forecast is
refreshed; the ensemble is refitted (members rescored and chosen) every `refit_every_windows`
windows and the fitted ensemble forecasts from each new window in between. A refit shows the
global gradient-boosting member every observed model's history on the same windows, so each
model's forecast learns from the whole fleet, as `EnsembleForecaster.forecast_many` does. `floor()` returns the
planner's floor for the demand one cold start ahead, and `forecast()` the `DemandForecast` behind it.

Token rates are forecast as the request-rate quantile times the mean tokens per request over the
last `token_ratio_windows` windows: tokens per request move slowly compared with the request rate.

The forecast itself goes to the policy (`forecast()`) only once the ensemble was chosen by a
backtest. A fallback (too little history to score members: the last value with a band) carries
nothing the policy's own rate and trend signals lack, but the policy would still turn its P90 band
into a need of its own and hold it for its stable window. On the one-hour Azure conversation
trace that cost GPU-hours for no fewer cold-start waits (bench/prewarm.py); the floor, which the
planner sizes at the target utilisation, is still given.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from forecasting.ensemble import EnsembleConfig, EnsembleForecaster, FittedEnsemble
from forecasting.planner import PrewarmPlanner
from forecasting.types import DemandForecast, ReplicaFloor


@dataclass
class _ModelState:
    first_window: int | None = None
    rates: list[float] = field(default_factory=list)  # per completed window, NaN for gaps
    prompt: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)
    open_window: int | None = None
    open_sums: np.ndarray = field(default_factory=lambda: np.zeros(3))
    open_count: int = 0
    fitted: FittedEnsemble | None = None
    windows_since_fit: int = 0
    quantiles: np.ndarray | None = None  # (horizon, 2) from the last completed window
    method: str = ""


class ForecastPrewarmer:
    """Aggregates observed rates per model, forecasts them, and asks the planner for floors.

    `cold_start_s` is the measured cold start per model (a mapping) or one number for all.
    """

    def __init__(
        self,
        planner: PrewarmPlanner,
        forecaster: EnsembleForecaster | None = None,
        window_s: float = 600.0,
        cold_start_s: float | Mapping[str, float] = 120.0,
        refit_every_windows: int = 6,
        token_ratio_windows: int = 6,
        history_windows: int | None = None,
        trim_every_windows: int = 36,
        share_forecast: bool = True,
        share_fallback_forecast: bool = False,
        stagger_refits: bool = False,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if refit_every_windows < 1:
            raise ValueError(f"refit_every_windows must be >= 1, got {refit_every_windows!r}")
        if trim_every_windows < 1:
            raise ValueError(f"trim_every_windows must be >= 1, got {trim_every_windows!r}")
        self.planner = planner
        self.forecaster = forecaster or EnsembleForecaster(EnsembleConfig())
        self.window_s = float(window_s)
        self._cold_start = cold_start_s
        self.refit_every_windows = refit_every_windows
        self.token_ratio_windows = token_ratio_windows
        config = self.forecaster.config
        needed = 8 * config.period + config.selection_windows + config.calibration_windows
        self.history_windows = history_windows or needed
        # Trimming one window at a time would shift every array the forecaster sees, and a cached
        # gradient-boosting model is keyed by its training history: trimming in blocks keeps the
        # history's start, and so the cache, unchanged between refits.
        self.trim_every_windows = trim_every_windows
        self.share_forecast = share_forecast
        self.share_fallback_forecast = share_fallback_forecast
        # Windows close on the same clock for every model, so without this every model refits on the
        # same window: a controller of many models would do all its refits in one tick.
        self.stagger_refits = stagger_refits
        self._models: dict[str, _ModelState] = {}

    def cold_start_s(self, model: str) -> float:
        """The lead time used for `model`."""
        if isinstance(self._cold_start, Mapping):
            return float(self._cold_start.get(model, max(self._cold_start.values(), default=0.0)))
        return float(self._cold_start)

    def observe(self, model: str, t: float, request_rate: float, prompt_token_rate: float, generation_token_rate: float) -> None:
        """Record one scrape of `model`'s rates at time `t` (seconds)."""
        sample = np.array([request_rate, prompt_token_rate, generation_token_rate], dtype=float)
        for name, value in zip(("request_rate", "prompt_token_rate", "generation_token_rate"), sample):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} for model {model!r} must be a finite rate >= 0, got {float(value)!r}")
        state = self._models.setdefault(model, _ModelState())
        window = math.floor(t / self.window_s)
        if state.open_window is None:
            state.open_window = window
            state.first_window = window
        if window < state.open_window:
            return  # a late sample for a window already closed is dropped
        if window > state.open_window:
            self._close_window(model, state, window)
        state.open_sums += sample
        state.open_count += 1

    def _close_window(self, model: str, state: _ModelState, next_window: int) -> None:
        mean = state.open_sums / max(state.open_count, 1)
        state.rates.append(mean[0])
        state.prompt.append(mean[1])
        state.generation.append(mean[2])
        gap = next_window - state.open_window - 1
        for _ in range(gap):
            for series in (state.rates, state.prompt, state.generation):
                series.append(math.nan)
        excess = len(state.rates) - self.history_windows
        if excess >= self.trim_every_windows:
            del state.rates[:excess], state.prompt[:excess], state.generation[:excess]
            state.first_window += excess
        state.open_window = next_window
        state.open_sums = np.zeros(3)
        state.open_count = 0
        self._refresh(model, state, gap + 1)

    def _refresh(self, model: str, state: _ModelState, new_windows: int) -> None:
        y = np.asarray(state.rates, dtype=float)
        state.windows_since_fit += new_windows
        if state.fitted is None or state.windows_since_fit >= self.refit_every_windows:
            first = state.fitted is None
            state.fitted = self.forecaster.fit(y, fleet=self._fleet_view(state))
            state.windows_since_fit = -self._refit_offset(model) if first else 0
        state.quantiles = state.fitted.paths(y, np.array([len(y) - 1]))[0]
        state.method = state.fitted.method

    def _refit_offset(self, model: str) -> int:
        """Windows by which `model`'s refits are shifted (0 unless `stagger_refits`): spread by its name."""
        return zlib.crc32(model.encode()) % self.refit_every_windows if self.stagger_refits else 0

    def _fleet_view(self, state: _ModelState) -> np.ndarray:
        """Every model's request rates on `state`'s windows (NaN where a model has none): what global members learn from."""
        first, n = state.first_window, len(state.rates)
        view = np.full((len(self._models), n), np.nan)
        for row, other in zip(view, self._models.values()):
            if other.first_window is None:
                continue
            lo, hi = max(first, other.first_window), min(first + n, other.first_window + len(other.rates))
            if hi > lo:
                row[lo - first : hi - first] = other.rates[lo - other.first_window : hi - other.first_window]
        return view

    def forecast(self, model: str, now: float) -> DemandForecast | None:
        """The forecast handed to the policy (`Observation.forecast`); None when `share_forecast` is off.

        With `share_forecast=False` the policy sees only the floor, so the forecast bounds the fleet
        from below but does not also enter the policy's own need. A fallback forecast (too little
        history to choose members) is withheld unless `share_fallback_forecast` is set.
        """
        if not self.share_forecast:
            return None
        forecast = self.demand_forecast(model, now)
        if forecast is None or self.share_fallback_forecast or not forecast.method.startswith("fallback"):
            return forecast
        return None

    def demand_forecast(self, model: str, now: float) -> DemandForecast | None:
        """The forecast for `model` at `now + cold start`, or None before the first window completes."""
        state = self._models.get(model)
        if state is None or state.quantiles is None or state.first_window is None:
            return None
        target_time = now + self.cold_start_s(model)
        last_window = state.first_window + len(state.rates) - 1
        target_window = math.floor(target_time / self.window_s)
        horizon = len(state.quantiles)
        step = min(max(target_window - last_window, 1), horizon)
        p50, p90 = (float(v) for v in state.quantiles[step - 1])
        prompt_p90 = generation_p90 = None
        recent = np.asarray(state.rates[-self.token_ratio_windows :])
        observed = ~np.isnan(recent)
        if observed.any() and recent[observed].sum() > 0:
            requests = recent[observed].sum()
            prompt_p90 = p90 * float(np.asarray(state.prompt[-self.token_ratio_windows :])[observed].sum() / requests)
            generation_p90 = p90 * float(np.asarray(state.generation[-self.token_ratio_windows :])[observed].sum() / requests)
        method = state.method
        if target_window - last_window > horizon:
            method += f" (target beyond horizon: used {horizon} windows ahead)"
        return DemandForecast(model, now, target_time, p50, p90, prompt_p90, generation_p90, method)

    def floor(self, model: str, now: float) -> ReplicaFloor | None:
        """The replica floor for `model` at `now`, or None when there is neither a forecast nor an event."""
        return self.planner.floor(model, self.demand_forecast(model, now), now, self.cold_start_s(model))
