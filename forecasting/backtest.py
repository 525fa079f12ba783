"""Rolling-origin backtests of the ensemble against the naive baselines.

At every origin in the judged span the forecaster sees only the windows up to that origin. The
ensemble is refitted (members rescored and chosen) every `refit_every` origins; in between, the
fitted ensemble forecasts from each new origin with the data known there.

The baseline is the stronger, per model and horizon, of the last value (naive) and the same window
a day earlier (seasonal naive), each with rolling conformal P90 intervals (`ConformalBand`, same
calibration length as the ensemble). Picking the stronger one on the judged span itself favours
the baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from forecasting.arrays import pinball_loss
from forecasting.conformal import ConformalBand
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster
from forecasting.members import TAUS, ConformalMember, SeasonalNaivePoint, naive_point
from forecasting.series import WindowedSeries


@dataclass(frozen=True)
class HorizonScore:
    """Accuracy at one horizon over the judged targets."""

    horizon: int
    targets: int
    p90_pinball: float
    p50_pinball: float
    p90_coverage: float
    rising_targets: int
    rising_under_p90: float  # share of rising-edge targets above the P90


@dataclass(frozen=True)
class SeriesBacktest:
    """Scores of the ensemble and of the baseline for one series."""

    model: str
    window_s: float
    first_target: int
    ensemble: list[HorizonScore]
    baseline: list[HorizonScore]
    baseline_method: list[str]  # per horizon: "naive" or "seasonal_naive_daily"
    methods: list[str]  # distinct ensemble methods used over the span

    def pinball_ratio(self) -> list[float]:
        """Ensemble P90 pinball / baseline P90 pinball, per horizon."""
        return [e.p90_pinball / b.p90_pinball if b.p90_pinball > 0 else float("nan") for e, b in zip(self.ensemble, self.baseline)]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pinball_ratio"] = self.pinball_ratio()
        return data


def ensemble_paths(y: np.ndarray, origins: np.ndarray, config: EnsembleConfig, refit_every: int) -> tuple[np.ndarray, list[list[str]]]:
    """Ensemble quantiles `(S, len(origins), horizon, 2)` of series `y` `(S, T)` over contiguous `origins`.

    The series are fitted together, so a global member learns from all of them, and refitted every
    `refit_every` origins. Also returns the distinct methods each series used.
    """
    forecaster = EnsembleForecaster(config)
    out = np.full((len(y), len(origins), config.horizon, len(TAUS)), np.nan)
    methods: list[list[str]] = [[] for _ in y]
    for start in range(0, len(origins), refit_every):
        block = origins[start : start + refit_every]
        fitted = forecaster.fit(y, end=int(block[0]) + 1)
        for used, method in zip(methods, fitted.methods):
            if method not in used:
                used.append(method)
        out[:, start : start + len(block)] = fitted.paths(y, block)
    return out, methods


def baseline_paths(y: np.ndarray, origins: np.ndarray, config: EnsembleConfig) -> dict[str, np.ndarray]:
    """Naive and seasonal-naive (one day) quantile paths with rolling conformal intervals."""
    band = ConformalBand(calibration_windows=config.calibration_windows)
    members = [
        ConformalMember("naive", naive_point, band, 1),
        ConformalMember("seasonal_naive_daily", SeasonalNaivePoint(config.period), band, config.period),
    ]
    return {m.name: m.paths(y, origins, config.horizon) for m in members}


def score(y: np.ndarray, origins: np.ndarray, paths: np.ndarray, rise_windows: int, first_target: int) -> list[HorizonScore]:
    """Scores per horizon over targets at or after `first_target`."""
    scores = []
    for h in range(1, paths.shape[1] + 1):
        target = origins + h
        keep = (target >= first_target) & (target < len(y))
        t = target[keep]
        actual = y[t]
        p50, p90 = paths[keep, h - 1, 0], paths[keep, h - 1, 1]
        ok = ~np.isnan(actual) & ~np.isnan(p90)
        before = np.where(t - rise_windows >= 0, y[np.maximum(t - rise_windows, 0)], np.nan)
        with np.errstate(invalid="ignore"):
            rising = ok & (actual > 1.1 * before)
        under = actual > p90
        scores.append(
            HorizonScore(
                horizon=h,
                targets=int(ok.sum()),
                p90_pinball=float(pinball_loss(actual[ok], p90[ok], TAUS[1]).mean()) if ok.any() else float("nan"),
                p50_pinball=float(pinball_loss(actual[ok], p50[ok], TAUS[0]).mean()) if ok.any() else float("nan"),
                p90_coverage=float((actual[ok] <= p90[ok]).mean()) if ok.any() else float("nan"),
                rising_targets=int(rising.sum()),
                rising_under_p90=float((under & rising).sum() / rising.sum()) if rising.any() else float("nan"),
            )
        )
    return scores


def backtest_series(
    series: WindowedSeries,
    config: EnsembleConfig,
    first_target: int,
    refit_every: int = 6,
) -> tuple[SeriesBacktest, np.ndarray, np.ndarray]:
    """Backtest one series on targets from window `first_target` on; also returns origins and ensemble paths."""
    return backtest_together([series], config, first_target, refit_every)[0]


def backtest_together(
    series_list: list[WindowedSeries],
    config: EnsembleConfig,
    first_target: int,
    refit_every: int = 6,
) -> list[tuple[SeriesBacktest, np.ndarray, np.ndarray]]:
    """Backtest series of one length and window length fitted together, as `forecast_many` fits a fleet.

    Each series is still scored on its own, against its own baseline.
    """
    if len({(len(s), s.window_s) for s in series_list}) != 1:
        raise ValueError("series fitted together must share their length and window length")
    y = np.stack([s.values for s in series_list])
    if not 1 <= first_target < y.shape[-1]:
        raise ValueError(f"first_target must lie inside the series (1..{y.shape[-1] - 1}), got {first_target}")
    origins = np.arange(max(0, first_target - config.horizon), y.shape[-1] - 1)
    paths, methods = ensemble_paths(y, origins, config, refit_every)
    results = []
    for series, ens, used in zip(series_list, paths, methods):
        results.append((_score_series(series, config, origins, ens, used, first_target), origins, ens))
    return results


def _score_series(
    series: WindowedSeries, config: EnsembleConfig, origins: np.ndarray, ens: np.ndarray, methods: list[str], first_target: int
) -> SeriesBacktest:
    y = series.values
    rise_windows = max(1, round(3600 / series.window_s))
    ens_scores = score(y, origins, ens, rise_windows, first_target)
    candidates = {name: score(y, origins, p, rise_windows, first_target) for name, p in baseline_paths(y, origins, config).items()}
    base_scores, base_methods = [], []
    for h in range(config.horizon):
        name = min(candidates, key=lambda n: _nan_to_inf(candidates[n][h].p90_pinball))
        base_scores.append(candidates[name][h])
        base_methods.append(name)
    return SeriesBacktest(series.model, series.window_s, first_target, ens_scores, base_scores, base_methods, methods)


def _nan_to_inf(x: float) -> float:
    return float("inf") if np.isnan(x) else x
