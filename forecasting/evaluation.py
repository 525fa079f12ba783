"""Backtest runs over whole traces, shared by the CLI and the benchmark."""

from __future__ import annotations

import numpy as np

from forecasting.backtest import SeriesBacktest, backtest_together
from forecasting.ensemble import DEFAULT_MEMBERS, EnsembleConfig
from forecasting.series import WindowedSeries

DAY_S = 86400.0


def config_for(series: WindowedSeries, horizon: int, members: tuple[str, ...] = DEFAULT_MEMBERS) -> EnsembleConfig:
    """Ensemble settings that fit the series' window length and history length."""
    period = max(2, round(DAY_S / series.window_s))
    span = max(6, min(144, len(series) // 4))
    return EnsembleConfig(horizon=horizon, period=period, members=members, selection_windows=span, calibration_windows=span)


def default_first_target(series: WindowedSeries) -> int:
    """Judge from day 8 when the series holds more than a week, else judge its second half."""
    week = round(7 * DAY_S / series.window_s)
    return week if len(series) > week + 1 else len(series) // 2


def run_backtests(
    series_list: list[WindowedSeries],
    horizon: int,
    refit_every: int = 6,
    members: tuple[str, ...] = DEFAULT_MEMBERS,
    first_target: int | None = None,
) -> list[tuple[SeriesBacktest, np.ndarray, np.ndarray]]:
    """Backtest the series, those of one length fitted together; returns (scores, origins, paths) per series, in order."""
    groups: dict[tuple[int, float], list[int]] = {}
    for i, series in enumerate(series_list):
        groups.setdefault((len(series), series.window_s), []).append(i)
    results: list = [None] * len(series_list)
    for indices in groups.values():
        together = [series_list[i] for i in indices]
        config = config_for(together[0], horizon, members)
        start = default_first_target(together[0]) if first_target is None else first_target
        for i, result in zip(indices, backtest_together(together, config, start, refit_every)):
            results[i] = result
    return results


def summary(results: list[SeriesBacktest]) -> dict[str, float]:
    """Averages over models and horizons, and the worst per-model ratio."""
    ratios = np.array([r.pinball_ratio() for r in results], dtype=float)
    coverage = np.array([[h.p90_coverage for h in r.ensemble] for r in results], dtype=float)
    ens_rise = np.array([[h.rising_under_p90 for h in r.ensemble] for r in results], dtype=float)
    base_rise = np.array([[h.rising_under_p90 for h in r.baseline] for r in results], dtype=float)
    per_model = np.nanmean(ratios, axis=1)
    return {
        "mean_p90_pinball_ratio": float(np.nanmean(ratios)),
        "worst_model_p90_pinball_ratio": float(np.nanmax(per_model)),
        "worst_cell_p90_pinball_ratio": float(np.nanmax(ratios)),
        "min_p90_coverage": float(np.nanmin(coverage)),
        "max_p90_coverage": float(np.nanmax(coverage)),
        "rising_cells_better_than_baseline": int(np.nansum(ens_rise < base_rise)),
        "rising_cells": int(np.isfinite(ens_rise).sum()),
    }
