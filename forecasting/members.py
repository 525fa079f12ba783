"""Candidate forecasters (ensemble members), evaluated at many forecast origins at once.

A member answers one question: standing at the end of window `o` (knowing `y[:o+1]`), what are the
P50 and P90 of the rate in windows `o+1 .. o+horizon`? `paths(y, origins, horizon)` returns those
quantiles for every origin as an array of shape `(len(origins), horizon, 2)`. Computing all origins
in one call is what makes rolling-origin backtests and refits of many series cheap. `y` may also
be `(S, T)`, many series sharing the origins; the result is then `(S, len(origins), horizon, 2)`.
The array members (last value, seasonal naive, seasonal ratio, lag linear regression) compute all
series at once; exponential smoothing calls statsforecast once per series (0.1 ms each); the quantile
regression and MSTL members loop over series and are opt-in.

Point forecasters get their quantiles from conformal residuals (`conformal.py`); the quantile
regression member predicts the quantiles directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from forecasting.arrays import forward_fill, gather, last_axis_quantiles
from forecasting.conformal import ConformalBand

TAUS = (0.5, 0.9)


class Member(Protocol):
    """A forecaster that can be evaluated at many origins of one series."""

    name: str

    def min_history(self, horizon: int) -> int:
        """Windows of history needed before the first origin this member can serve."""
        ...

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """Quantile forecasts `(len(origins), horizon, 2)` for P50 and P90, using only `y[:o+1]` for origin `o`."""
        ...


class PointForecaster(Protocol):
    """A point forecast at many origins: `(len(origins), horizon)`, NaN where it has no answer."""

    def __call__(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray: ...


def _gather(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`a[..., index]` with NaN where the index falls outside `a`."""
    return gather(a, index)


def naive_point(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Last observed value, carried flat over the horizon."""
    last = forward_fill(y)[..., origins]
    return np.repeat(last[..., None], horizon, axis=-1)


@dataclass(frozen=True)
class SeasonalNaivePoint:
    """The value one season (`period` windows) before the target; the last value where that is missing."""

    period: int

    def __call__(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        steps = np.arange(1, horizon + 1)
        seasonal = _gather(y, origins[:, None] + steps[None, :] - self.period)
        return np.where(np.isnan(seasonal), naive_point(y, origins, horizon), seasonal)


@dataclass(frozen=True)
class SeasonalRatioPoint:
    """Last value times the change that the same hours showed on previous days.

    In log space: `z[o] + median_d (s[o+h-dP] - s[o-dP])` over the last `days` seasons, where `s` is
    `z` averaged over `2*smooth+1` neighbouring windows. It anticipates daily ramps while following
    the current level, so level shifts carry through at once.
    """

    period: int
    days: int = 7
    smooth: int = 1

    def __call__(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(np.where(y > 0, y, np.nan))
        width = 2 * self.smooth + 1
        pad = np.full(z.shape[:-1] + (self.smooth,), np.nan)
        padded = np.concatenate([pad, z, pad], axis=-1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
        counts = (~np.isnan(windows)).sum(axis=-1)
        sums = np.nansum(windows, axis=-1)
        s = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        steps = np.arange(1, horizon + 1)
        deltas = []
        for d in range(1, self.days + 1):
            back = origins - d * self.period
            ahead = back[:, None] + steps[None, :]
            # The smoothed value at `ahead` must not reach past the origin.
            usable = ahead + self.smooth <= origins[:, None]
            delta = _gather(s, ahead) - _gather(s, back)[..., None]
            deltas.append(np.where(usable, delta, np.nan))
        stacked = np.stack(deltas, axis=-1)
        change = np.nan_to_num(last_axis_quantiles(stacked, [0.5])[..., 0])
        level = forward_fill(z)[..., origins]
        return np.exp(level[..., None] + change)


@dataclass
class ExponentialSmoothingPoint:
    """Simple exponential smoothing with its smoothing weight fitted by statsforecast.

    The one-step in-sample fit of SES is the level after each window, which is also its flat forecast
    for every horizon, so one library call per series serves all its origins.
    """

    def __call__(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        if y.ndim > 1:
            return np.stack([self(row, origins, horizon) for row in y])
        from statsforecast.models import SimpleExponentialSmoothingOptimized

        last = int(origins.max())
        filled = forward_fill(y[: last + 1])
        first = int(np.argmax(~np.isnan(filled)))
        history = filled[first:]
        if len(history) < 3:
            return naive_point(y, origins, horizon)
        result = SimpleExponentialSmoothingOptimized().forecast(y=history, h=1, fitted=True)
        # fitted[i] is the forecast of history[i] made after history[i-1]: the level after window i-1.
        level_after = np.append(result["fitted"][1:], result["mean"][0])
        level = np.full(last + 1, np.nan)
        level[first:] = level_after
        level = np.where(np.isnan(level), filled, level)
        return np.repeat(level[origins][:, None], horizon, axis=1)


@dataclass
class ConformalMember:
    """A point forecaster with conformal P50/P90 from its own recent residuals."""

    name: str
    point: PointForecaster
    band: ConformalBand
    history_needed: int = 0

    def min_history(self, horizon: int) -> int:
        return self.history_needed + horizon + self.band.min_residuals

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        first = max(0, int(origins.min()) - self.band.history_needed(horizon))
        calibration_origins = np.arange(first, int(origins.max()) + 1)
        points = self.point(y, calibration_origins, horizon)
        quantiles = self.band.apply(y, calibration_origins, points, TAUS, int(origins.min()) - first)
        return quantiles[..., origins - first, :, :]


@dataclass
class LagQuantileRegression:
    """Linear quantile regression of the change over the horizon on recent and seasonal changes.

    Features, divided by the current level so that one fit serves every level: a constant, the recent
    mean absolute step (volatility), the last step, the change the same hours showed a day and a week
    earlier, and the size of the day-ago change. Fitted per horizon and quantile by iteratively
    reweighted least squares on the last `fit_windows` origins. Because volatility is a feature, the
    P90 band widens when the series turns erratic and narrows when it calms down.
    """

    period: int
    name: str = "lag_quantile_regression"
    fit_windows: int = 1008
    volatility_windows: int = 6
    iterations: int = 15
    weekly: bool = True
    _coefficients: dict[tuple[int, float], np.ndarray] = field(default_factory=dict, repr=False)
    _per_series: list[dict[tuple[int, float], np.ndarray]] = field(default_factory=list, repr=False)

    def min_history(self, horizon: int) -> int:
        # One day for the day-ago features, then at least two days of origins to fit on.
        return self.period + horizon + 2 * self.period

    def _features(self, y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(y)
        filled = forward_fill(y)
        steps = np.abs(np.diff(filled, prepend=filled[0]))
        kernel = np.ones(self.volatility_windows) / self.volatility_windows
        volatility = np.convolve(np.nan_to_num(steps), kernel, "full")[:n]
        idx = np.arange(n)
        columns = [np.ones(n), volatility, filled - _gather(filled, idx - 1)]
        day_change = _gather(y, idx + horizon - self.period) - _gather(y, idx - self.period)
        columns += [day_change, np.abs(day_change)]
        if self.weekly:
            week = 7 * self.period
            columns.append(_gather(y, idx + horizon - week) - _gather(y, idx - week))
        level = np.maximum(filled, 1e-9)
        features = np.nan_to_num(np.column_stack(columns) / level[:, None])
        features[:, 0] = 1.0
        return features, level

    def fit(self, y: np.ndarray, end: int, horizon: int) -> None:
        """Fit coefficients on origins whose targets lie inside `y[..., :end]` (per series for `(S, T)`)."""
        if y.ndim > 1:
            per_series = []
            for row in y:
                self.fit(row, end, horizon)
                per_series.append(self._coefficients)
            self._per_series = per_series
            return
        filled = forward_fill(y[:end])
        self._coefficients = {}
        last_origin = end - 1 - horizon
        first_origin = max(self.period, last_origin - self.fit_windows + 1)
        if last_origin < first_origin:
            return
        origins = np.arange(first_origin, last_origin + 1)
        features, targets, taus = [], [], []
        for h in range(1, horizon + 1):
            f, level = self._features(y[:end], h)
            target = (y[origins + h] - filled[origins]) / level[origins]
            for tau in TAUS:
                features.append(f[origins])
                targets.append(target)
                taus.append(tau)
        betas = _quantile_regression(np.stack(features), np.stack(targets), np.array(taus), self.iterations)
        for i, (h, tau) in enumerate((h, tau) for h in range(1, horizon + 1) for tau in TAUS):
            self._coefficients[(h, tau)] = betas[i]

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        if y.ndim > 1:
            rows = []
            for row, coefficients in zip(y, self._per_series):
                self._coefficients = coefficients
                rows.append(self.paths(row, origins, horizon))
            return np.stack(rows)
        out = np.full((len(origins), horizon, len(TAUS)), np.nan)
        filled = forward_fill(y)
        for h in range(1, horizon + 1):
            features, level = self._features(y, h)
            for k, tau in enumerate(TAUS):
                beta = self._coefficients.get((h, tau))
                if beta is None:
                    continue
                out[:, h - 1, k] = filled[origins] + level[origins] * (features[origins] @ beta)
        out[..., 1] = np.maximum(out[..., 1], out[..., 0])
        return np.maximum(out, 0.0)


def _quantile_regression(features: np.ndarray, targets: np.ndarray, taus: np.ndarray, iterations: int) -> np.ndarray:
    """Minimise the pinball loss by iteratively reweighted least squares, for a batch of problems.

    `features` `(batch, rows, p)`, `targets` `(batch, rows)` (NaN rows are ignored), `taus` `(batch,)`;
    returns coefficients `(batch, p)`.
    """
    keep = ~np.isnan(targets)
    x = np.where(keep[..., None], features, 0.0)
    b = np.where(keep, targets, 0.0)
    p = x.shape[-1]
    ridge = 1e-6 * np.eye(p)
    if keep.sum(axis=1).min() < 3 * p:
        beta = np.zeros((len(b), p))
        beta[:, 0] = [np.quantile(t[k], tau) if k.any() else 0.0 for t, k, tau in zip(targets, keep, taus)]
        return beta
    xt = np.swapaxes(x, 1, 2)
    beta = np.linalg.solve(xt @ x + ridge, xt @ b[..., None])[..., 0]
    floor = 1e-3 * (b.std(axis=1, keepdims=True) + 1e-12)
    tau = taus[:, None]
    for _ in range(iterations):
        residual = b - (x @ beta[..., None])[..., 0]
        weights = np.where(residual >= 0, tau, 1 - tau) / np.maximum(np.abs(residual), floor) * keep
        weighted_t = xt * weights[:, None, :]
        beta = np.linalg.solve(weighted_t @ x + ridge, weighted_t @ b[..., None])[..., 0]
    return beta


@dataclass
class SeasonalLibraryMember:
    """MSTL (multiple seasonal-trend decomposition by Loess) from statsforecast, with AutoETS on the trend.

    statsforecast rather than statsmodels directly: it already combines statsmodels' STL with its
    own numba-compiled AutoETS for the trend, takes and returns plain numpy arrays, and gives
    prediction intervals (`level=[80]` yields the P90 as the upper bound). Gaps are filled with the
    same window of the previous day (else the last value) first, since the library needs a complete
    series. One fit of 1,008 windows takes about 0.2 s, so the member refits once per
    `refit_windows` origins (forecasts in between come from the latest fit), and it is not in the
    default ensemble: bench/forecast.py scores it on its own.
    """

    period: int
    name: str = "mstl"
    refit_windows: int = 6
    weekly: bool = False

    def min_history(self, horizon: int) -> int:
        return 2 * self.period + horizon

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        if y.ndim > 1:
            return np.stack([self.paths(row, origins, horizon) for row in y])
        out = np.full((len(origins), horizon, len(TAUS)), np.nan)
        block_starts = origins[(origins - origins[0]) % self.refit_windows == 0]
        for start in block_starts:
            in_block = (origins >= start) & (origins < start + self.refit_windows)
            reach = horizon + self.refit_windows - 1
            forecast = self._forecast(y[: start + 1], reach)
            if forecast is None:
                continue
            for i in np.flatnonzero(in_block):
                offset = origins[i] - start
                out[i] = forecast[offset : offset + horizon]
        return out

    def _forecast(self, history: np.ndarray, steps: int) -> np.ndarray | None:
        from statsforecast.models import MSTL, AutoETS

        filled = fill_gaps(history, self.period)
        if filled is None or len(filled) < 2 * self.period + 1:
            return None
        seasons = [self.period]
        if self.weekly and len(filled) >= 2 * 7 * self.period:
            seasons.append(7 * self.period)
        model = MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
        result = model.forecast(y=filled, h=steps, level=[80])
        quantiles = np.column_stack([result["mean"], result["hi-80"]])
        quantiles[:, 1] = np.maximum(quantiles[:, 1], quantiles[:, 0])
        return np.maximum(quantiles, 0.0)


def fill_gaps(y: np.ndarray, period: int) -> np.ndarray | None:
    """Fill missing windows with the value one period earlier, else the last value; drop leading gaps."""
    observed = np.flatnonzero(~np.isnan(y))
    if observed.size == 0:
        return None
    filled = y[observed[0] :].copy()
    for i in np.flatnonzero(np.isnan(filled)):
        filled[i] = filled[i - period] if i >= period and not np.isnan(filled[i - period]) else filled[i - 1]
    return filled


def lag_features(y: np.ndarray, origins: np.ndarray, horizon: int, period: int, volatility_windows: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Features of the change over 1..`horizon` windows at `origins`: `(S, len(origins), horizon, 6)`, and the level `(S, len(origins))`.

    A constant, the recent mean absolute step (volatility), the last step, the change the same
    hours showed a day and a week earlier, and the size of the day-ago change, all divided by the
    current level so that one fit serves every level.
    """
    filled = forward_fill(y)
    steps = np.nan_to_num(np.abs(np.diff(filled, axis=-1, prepend=filled[..., :1])))
    cumulative = np.concatenate([np.zeros(y.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)
    start = np.maximum(origins + 1 - volatility_windows, 0)
    volatility = (cumulative[..., origins + 1] - cumulative[..., start]) / volatility_windows
    current = filled[..., origins]
    last_step = current - gather(filled, origins - 1)
    ahead = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    day_change = gather(y, ahead - period) - gather(y, origins - period)[..., None]
    week_change = gather(y, ahead - 7 * period) - gather(y, origins - 7 * period)[..., None]
    level = np.maximum(np.nan_to_num(current), 1e-9)
    features = np.empty(day_change.shape + (6,))
    features[..., 0] = 1.0
    features[..., 1] = (volatility / level)[..., None]
    features[..., 2] = (last_step / level)[..., None]
    features[..., 3] = day_change / level[..., None]
    features[..., 4] = np.abs(features[..., 3])
    features[..., 5] = week_change / level[..., None]
    return np.nan_to_num(features), level


@dataclass
class LagLinearMember:
    """Least-squares regression of the change over the horizon on `lag_features`, with a conformal band.

    Fitted per series and horizon on the last `fit_windows` origins (one batched solve for all
    series); the P50/P90 come from the rolling conformal band of its residuals, so the band follows
    the series' recent errors.
    """

    period: int
    band: ConformalBand
    name: str = "lag_linear"
    fit_windows: int = 1008
    ridge: float = 1e-3
    _coefficients: np.ndarray | None = field(default=None, repr=False)  # (S, horizon, 6)

    def min_history(self, horizon: int) -> int:
        # One day for the day-ago features, then two days of origins to fit on, then the band.
        return 3 * self.period + horizon + self.band.min_residuals

    def fit(self, y: np.ndarray, end: int, horizon: int) -> None:
        """Fit coefficients on origins whose targets lie inside `y[..., :end]`."""
        batch = np.atleast_2d(y)[:, :end]
        last_origin = end - 1 - horizon
        first_origin = max(self.period, last_origin - self.fit_windows + 1)
        origins = np.arange(first_origin, last_origin + 1)
        filled = forward_fill(batch)
        features, level = lag_features(batch, origins, horizon, self.period)
        # (S, horizon, rows, 6): one least-squares problem per series and horizon.
        x = np.moveaxis(features, 2, 1)
        target = (gather(batch, origins[:, None] + np.arange(1, horizon + 1)) - filled[:, origins, None]) / level[..., None]
        target = np.moveaxis(target, 2, 1)
        keep = np.isfinite(target)
        x = np.where(keep[..., None], x, 0.0)
        b = np.where(keep, target, 0.0)
        shrink = self.ridge * len(origins) * np.diag([1e-9] + [1.0] * 5)  # the constant is not shrunk
        gram = np.swapaxes(x, -1, -2) @ x + shrink
        self._coefficients = np.linalg.solve(gram, (np.swapaxes(x, -1, -2) @ b[..., None]))[..., 0]

    def point(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """Point forecasts `(S, len(origins), horizon)` from the fitted coefficients."""
        batch = np.atleast_2d(y)
        filled = forward_fill(batch)[:, origins]
        features, level = lag_features(batch, origins, horizon, self.period)
        change = np.einsum("sohp,shp->soh", features, self._coefficients)
        return np.maximum(filled[..., None] + level[..., None] * change, 0.0)

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        first = max(0, int(origins.min()) - self.band.history_needed(horizon))
        calibration_origins = np.arange(first, int(origins.max()) + 1)
        points = self.point(y, calibration_origins, horizon)
        quantiles = self.band.apply(np.atleast_2d(y), calibration_origins, points, TAUS, int(origins.min()) - first)
        quantiles = quantiles[:, origins - first]
        return quantiles if y.ndim > 1 else quantiles[0]
