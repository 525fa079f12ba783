"""`ForecastPrewarmer`: the object the controller and the simulator call each control interval.

`observe()` receives the scraped rates of a model; samples are averaged into windows of `window_s`
seconds (a window with no sample is a gap). When a window completes, the model's forecast is
refreshed; the ensemble is refitted (members rescored and chosen) every `refit_every_windows`
windows and the fitted ensemble forecasts from each new window in between. A refit shows the
global gradient-boosting member every observed model's history on the same windows, so each
model's forecast learns from the whole fleet, as `EnsembleForecaster.forecast_many` does. `floor()` returns the
planner's floor for the demand one cold start ahead, and `forecast()` the `DemandForecast` behind it.

Where a close's fit and forecast run is the caller's choice (`run_refresh`): in the `observe()` that
closed the window, or on a thread of their own (the controller's), off its ticks. `history()` and
`restore_history()` carry a model's windows across a restart, so the forecaster need not start over.

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

import functools
import logging
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from forecasting.ensemble import EnsembleConfig, EnsembleForecaster, FittedEnsemble
from forecasting.planner import PrewarmPlanner
from forecasting.types import DemandForecast, ReplicaFloor

log = logging.getLogger("warmscale.forecast")

_SERIES = ("rates", "prompt", "generation")


@dataclass(frozen=True)
class _Published:
    """One window close's forecast, replaced whole so a reader never sees half of one."""

    origin_window: int       # the newest window the forecast starts from
    quantiles: np.ndarray    # (horizon, 2): P50 and P90 per window ahead
    method: str


@dataclass
class _ModelState:
    first_window: int | None = None
    rates: list[float] = field(default_factory=list)  # per completed window, NaN for gaps
    prompt: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)
    open_window: int | None = None
    open_sums: np.ndarray = field(default_factory=lambda: np.zeros(3))
    open_count: int = 0
    fit_requested: bool = False
    windows_since_fit: int = 0
    fitted: FittedEnsemble | None = None   # written only by refresh jobs, which run in order
    published: _Published | None = None


class ForecastPrewarmer:
    """Aggregates observed rates per model, forecasts them, and asks the planner for floors.

    `cold_start_s` is the measured cold start per model (a mapping) or one number for all.
    `run_refresh` says where a window close's fit and forecast run: None, in the `observe()` call
    that closed the window; a single-thread executor's `submit`, off that caller's path (the
    controller's ticks), in order per model. Until a job lands, the previous forecast stands.
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
        run_refresh: Callable[[Callable[[], None]], object] | None = None,
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
        self._run_refresh = run_refresh
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

    def windows_end(self, model: str) -> int | None:
        """The window after `model`'s last completed one (what `history()` would end before); None
        before any. It moves only when a window closes: a cheap test of whether to save again."""
        state = self._models.get(model)
        return None if state is None or not state.rates else state.first_window + len(state.rates)

    def history_since(self, model: str, saved_end: int | None) -> tuple[dict | None, int | None]:
        """What to save of `model` now that the last save ended before window `saved_end`: its
        history when a window has closed since (else None), and where the history ends."""
        end = self.windows_end(model)
        if end is None or end == saved_end:
            return None, saved_end if end is None else end
        return self.history(model), end

    def history(self, model: str) -> dict | None:
        """`model`'s completed windows, JSON-safe (a gap is None), for `restore_history`; None when
        no window has completed."""
        state = self._models.get(model)
        if state is None or not state.rates:
            return None
        return {"window_s": self.window_s, "first_window": state.first_window,
                **{name: [None if math.isnan(v) else float(v) for v in getattr(state, name)] for name in _SERIES}}

    def restore_history(self, model: str, saved: Mapping) -> None:
        """Start `model` from `history()`'s output (a new leader, a restarted controller): the next
        window close fits on it, as if the windows had been observed here. Windows between the saved
        ones and the next sample become gaps. ValueError names what is wrong, and nothing changes."""
        if not isinstance(saved, Mapping):
            raise ValueError(f"expected an object, got {type(saved).__name__}")
        if saved.get("window_s") != self.window_s:
            raise ValueError(f"window_s is {saved.get('window_s')!r}; this forecaster's windows are {self.window_s:g} s")
        first = saved.get("first_window")
        if isinstance(first, bool) or not isinstance(first, int):
            raise ValueError(f"first_window: expected an integer, got {first!r:.40}")
        series = {name: _rates(saved.get(name), name) for name in _SERIES}
        lengths = {len(v) for v in series.values()}
        if len(lengths) != 1 or not lengths.pop():
            raise ValueError(f"{', '.join(_SERIES)}: expected lists of one length (at least one window), got lengths "
                             f"{[len(v) for v in series.values()]}")
        keep = min(len(series["rates"]), self.history_windows)
        n = len(series["rates"])
        self._models[model] = _ModelState(first_window=first + n - keep, open_window=first + n,
                                          **{name: v[n - keep:] for name, v in series.items()})

    def _close_window(self, model: str, state: _ModelState, next_window: int) -> None:
        # a window with no sample (the one after a restored history) is a gap
        mean = state.open_sums / state.open_count if state.open_count else np.full(3, math.nan)
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
        self._request_refresh(model, state, gap + 1)

    def _request_refresh(self, model: str, state: _ModelState, new_windows: int) -> None:
        """Forecast from the newest window, refitting first when one is due; inline or handed to
        `run_refresh` with copies of what it reads (later windows may close while it runs)."""
        state.windows_since_fit += new_windows
        refit = not state.fit_requested or state.windows_since_fit >= self.refit_every_windows
        if refit:
            state.windows_since_fit = 0 if state.fit_requested else -self._refit_offset(model)
            state.fit_requested = True
        y = np.array(state.rates, dtype=float)
        fleet = self._fleet_view(state) if refit else None
        job = functools.partial(self._refresh, state, y, fleet, state.first_window + len(y) - 1)
        if self._run_refresh is None:
            job()
        else:
            self._run_refresh(functools.partial(_logged, job, model))

    def _refresh(self, state: _ModelState, y: np.ndarray, fleet: np.ndarray | None, origin_window: int) -> None:
        """Refit on `fleet`'s windows (when given), then publish the forecast from `y`'s newest window."""
        if fleet is not None:
            state.fitted = self.forecaster.fit(y, fleet=fleet)
        quantiles = state.fitted.paths(y, np.array([len(y) - 1]))[0]
        state.published = _Published(origin_window, quantiles, state.fitted.method)

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
        published = None if state is None else state.published
        if published is None:
            return None
        target_time = now + self.cold_start_s(model)
        last_window = published.origin_window
        target_window = math.floor(target_time / self.window_s)
        horizon = len(published.quantiles)
        step = min(max(target_window - last_window, 1), horizon)
        p50, p90 = (float(v) for v in published.quantiles[step - 1])
        prompt_p90 = generation_p90 = None
        recent = np.asarray(state.rates[-self.token_ratio_windows :])
        observed = ~np.isnan(recent)
        if observed.any() and recent[observed].sum() > 0:
            requests = recent[observed].sum()
            prompt_p90 = p90 * float(np.asarray(state.prompt[-self.token_ratio_windows :])[observed].sum() / requests)
            generation_p90 = p90 * float(np.asarray(state.generation[-self.token_ratio_windows :])[observed].sum() / requests)
        method = published.method
        if target_window - last_window > horizon:
            method += f" (target beyond horizon: used {horizon} windows ahead)"
        return DemandForecast(model, now, target_time, p50, p90, prompt_p90, generation_p90, method)

    def floor(self, model: str, now: float) -> ReplicaFloor | None:
        """The replica floor for `model` at `now`, or None when there is neither a forecast nor an event."""
        return self.planner.floor(model, self.demand_forecast(model, now), now, self.cold_start_s(model))


def _logged(job: Callable[[], None], model: str) -> None:
    """Run a background refresh; a failure is logged (an executor would keep it in a future no one
    reads) and the model keeps its previous forecast."""
    try:
        job()
    except Exception:  # noqa: BLE001 - one model's failed fit never stops the others'
        log.exception("forecast refresh for model %r failed; its previous forecast stands", model)


def _rates(values, name: str) -> list[float]:
    """A saved series back to floats (None: a gap); ValueError names the field and the bad entry."""
    if not isinstance(values, list):
        raise ValueError(f"{name}: expected a list of rates, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}[{i}]: expected a finite rate >= 0 or null, got {v!r:.40}")
        else:
            out.append(float(v))
    return out
