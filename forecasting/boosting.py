"""Direct quantile forecasts from gradient-boosted trees (LightGBM), one global model per horizon and quantile.

The point-plus-conformal members give every origin the same band, save for the rising regime. A
quantile model learns the band from the features themselves: wide when the day-ago curve turns up
or the series is erratic, narrow when both are calm. The target is the log change from the origin
to `origin + h`, so one model serves every level and every series of the batch (a global model: the
models of a fleet share shapes such as daily ramps and lend each other rows). The features are
log changes over the past hour, the change the same hours showed 1, 2 and 7 days earlier, the time
of day, and recent volatility; gaps stay NaN, which LightGBM routes natively.

Training takes about 0.1 s per model (12 per horizon-6 fit) and is cached: a fit trains on the
history up to the last multiple of `refit_windows`, so refits within that span reuse the boosters.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from forecasting.arrays import forward_fill, gather

QUANTILES = (0.5, 0.9)
IDLE_RATE = 1e-3  # requests/s standing in for zero in log space
_RECENT_STEPS = (1, 2, 3, 6, 12)
_DAYS_BACK = (1, 2, 7)
_VOLATILITY_WINDOWS = 6


def log_rates(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log of `y` with gaps as NaN, and the same carried forward over gaps.

    An observed zero (an idle model) counts as `IDLE_RATE`, so that idling is a level the models can
    learn and forecast rather than a gap that would carry the last busy level forward.
    """
    raw = _log_observed(y)
    return raw, forward_fill(raw)


def _log_observed(y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.log(np.where(np.isnan(y), np.nan, np.maximum(y, IDLE_RATE)))


def boosting_features(
    raw: np.ndarray, level: np.ndarray, rows: np.ndarray, origins: np.ndarray, horizon: int, period: int
) -> np.ndarray:
    """Features `(n, 13)` of the log change from each `(rows[i], origins[i])` to `horizon` windows later.

    `raw` and `level` come from `log_rates` of `(S, T)` rates; only windows up to each origin are
    read (`horizon` < `period`).
    """
    n = raw.shape[-1]

    def at(a: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.where((index >= 0) & (index < n), a[rows, np.clip(index, 0, n - 1)], np.nan)

    now = at(level, origins)
    columns = [now - at(level, origins - k) for k in _RECENT_STEPS]
    for days in _DAYS_BACK:
        back = origins - days * period
        columns.append(at(raw, back + horizon) - at(raw, back))
        columns.append(at(raw, back) - at(raw, back - _VOLATILITY_WINDOWS))
    columns.append(((origins + horizon) % period) / period)
    steps = np.abs(np.stack([at(level, origins - k) - at(level, origins - k - 1) for k in range(_VOLATILITY_WINDOWS)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (leading gaps) gives NaN
        columns.append(np.nanmean(steps, axis=0))
    columns.append(now - at(raw, origins - period))
    return np.column_stack(columns)


@dataclass
class BoosterCache:
    """Trained boosters by (history fingerprint, training end, horizon, settings); least recently used out first."""

    capacity: int = 8
    _entries: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def get(self, key: tuple):
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        return None

    def put(self, key: tuple, value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


@dataclass
class GradientBoostingMember:
    """P50 and P90 `horizon` windows ahead from LightGBM quantile models trained across the batch's series."""

    period: int
    name: str = "gradient_boosting"
    global_model: ClassVar[bool] = True  # learns from every series of the fleet it is given (`EnsembleForecaster.fit`)
    refit_windows: int = 36
    max_rows: int = 16_000
    rounds: int = 50
    learning_rate: float = 0.1
    leaves: int = 8
    min_leaf_rows: int = 40
    seed: int = 0
    cache: BoosterCache = field(default_factory=BoosterCache, repr=False)
    _boosters: dict[tuple[int, float], object] = field(default_factory=dict, repr=False)

    def min_history(self, horizon: int) -> int:
        # A day for the day-ago features, then two days of origins to learn from.
        return 3 * self.period + horizon

    def fit(self, y: np.ndarray, end: int, horizon: int) -> None:
        """Train on origins whose targets lie before the last multiple of `refit_windows` at or below `end`."""
        batch = np.atleast_2d(y)[:, :end]
        train_end = end - end % self.refit_windows
        if train_end - 1 - horizon < self.period:
            train_end = end
        settings = (self.max_rows, self.rounds, self.learning_rate, self.leaves, self.min_leaf_rows, self.seed)
        digest = hashlib.blake2b(np.ascontiguousarray(batch[:, :train_end]).tobytes(), digest_size=16).hexdigest()
        key = (digest, batch.shape[0], train_end, horizon, self.period, settings)
        cached = self.cache.get(key)
        if cached is None:
            cached = self._train(batch[:, :train_end], horizon)
            self.cache.put(key, cached)
        self._boosters = cached

    def _train(self, history: np.ndarray, horizon: int) -> dict[tuple[int, float], object]:
        import lightgbm

        series, end = history.shape
        rng = np.random.default_rng(self.seed)
        params = dict(
            objective="quantile", learning_rate=self.learning_rate, num_leaves=self.leaves,
            min_data_in_leaf=self.min_leaf_rows, bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8,
            num_threads=1, seed=self.seed, verbose=-1,
        )
        boosters: dict[tuple[int, float], object] = {}
        raw, level = log_rates(history)
        for h in range(1, horizon + 1):
            origins = np.arange(self.period, end - h)
            rows = np.repeat(np.arange(series), len(origins))
            at = np.tile(origins, series)
            if len(at) > self.max_rows:
                pick = np.sort(rng.choice(len(at), self.max_rows, replace=False))
                rows, at = rows[pick], at[pick]
            features = boosting_features(raw, level, rows, at, h, self.period)
            target = raw[rows, at + h] - level[rows, at]
            ok = np.isfinite(target) & np.isfinite(features[:, 0])
            if ok.sum() < 4 * self.min_leaf_rows:
                continue
            data = lightgbm.Dataset(features[ok], target[ok], free_raw_data=True)
            for tau in QUANTILES:
                boosters[(h, tau)] = lightgbm.train({**params, "alpha": tau}, data, num_boost_round=self.rounds)
        return boosters

    def paths(self, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """Quantiles `(len(origins), horizon, 2)`, or `(S, len(origins), horizon, 2)` for `(S, T)`; NaN before a fit."""
        batch = np.atleast_2d(y)
        series = batch.shape[0]
        out = np.full((series, len(origins), horizon, len(QUANTILES)), np.nan)
        rows = np.repeat(np.arange(series), len(origins))
        at = np.tile(origins, series)
        raw, level = log_rates(batch)
        now = level[rows, at]
        for h in range(1, horizon + 1):
            if (h, QUANTILES[0]) not in self._boosters:
                continue
            features = boosting_features(raw, level, rows, at, h, self.period)
            for k, tau in enumerate(QUANTILES):
                change = self._boosters[(h, tau)].predict(features, num_threads=1)
                rate = np.exp(now + change)
                out[..., h - 1, k] = np.where(rate <= IDLE_RATE, 0.0, rate).reshape(series, len(origins))
        out[..., 1] = np.maximum(out[..., 1], out[..., 0])
        return out if y.ndim > 1 else out[0]
