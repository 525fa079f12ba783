"""Known signals give the expected forecasts."""

import numpy as np
import pytest

from forecasting.arrays import forward_fill, pinball_loss, row_quantiles
from forecasting.conformal import ConformalBand
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster
from forecasting.members import (
    LagLinearMember,
    LagQuantileRegression,
    SeasonalLibraryMember,
    SeasonalNaivePoint,
    SeasonalRatioPoint,
    naive_point,
)

PERIOD = 24


def seasonal_signal(days: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(days * PERIOD)
    rng = np.random.default_rng(seed)
    return 100 + 50 * np.sin(2 * np.pi * t / PERIOD) + noise * rng.standard_normal(t.size)


def small_config(**overrides) -> EnsembleConfig:
    settings = dict(horizon=4, period=PERIOD, selection_windows=48, calibration_windows=48)
    settings.update(overrides)
    return EnsembleConfig(**settings)


def test_seasonal_naive_repeats_the_previous_day_exactly():
    y = seasonal_signal(3)
    origins = np.array([60])
    point = SeasonalNaivePoint(PERIOD)(y, origins, 4)
    np.testing.assert_allclose(point[0], y[61:65])


def test_seasonal_ratio_follows_a_ramp_from_the_current_level():
    # Same daily shape every day, but today's level is twice yesterday's: the ratio member scales the
    # previous days' change to the current level.
    base = seasonal_signal(3)
    y = base.copy()
    y[2 * PERIOD :] *= 2
    origin = 2 * PERIOD + 10
    point = SeasonalRatioPoint(PERIOD, days=2, smooth=0)(y, np.array([origin]), 3)
    np.testing.assert_allclose(point[0], y[origin + 1 : origin + 4], rtol=1e-9)


def test_ensemble_on_pure_seasonality_forecasts_the_season():
    y = seasonal_signal(12)
    quantiles, method = EnsembleForecaster(small_config()).forecast(y)
    expected = seasonal_signal(13)[len(y) : len(y) + 4]
    np.testing.assert_allclose(quantiles[:, 0], expected, rtol=0.02)
    assert (quantiles[:, 1] >= quantiles[:, 0]).all()
    assert method.startswith("ensemble:")


def test_ensemble_follows_a_step_change():
    y = np.full(10 * PERIOD, 100.0) + np.random.default_rng(1).normal(0, 1, 10 * PERIOD)
    y[-30:] += 200  # the level moved 30 windows ago and stayed
    quantiles, _ = EnsembleForecaster(small_config()).forecast(y)
    assert np.all(np.abs(quantiles[:, 0] - 300) < 15)
    assert np.all(quantiles[:, 1] >= quantiles[:, 0])


def test_gap_does_not_break_the_forecast():
    y = seasonal_signal(12, noise=1.0)
    y[-20:-5] = np.nan  # a collection gap shortly before the origin
    quantiles, _ = EnsembleForecaster(small_config()).forecast(y)
    assert np.isfinite(quantiles).all()
    expected = seasonal_signal(13)[len(y) : len(y) + 4]
    np.testing.assert_allclose(quantiles[:, 0], expected, rtol=0.1)


def test_latest_window_missing_uses_the_last_observation():
    y = np.array([5.0, 6.0, np.nan, np.nan])
    np.testing.assert_array_equal(forward_fill(y), [5.0, 6.0, 6.0, 6.0])
    np.testing.assert_array_equal(naive_point(y, np.array([3]), 2), [[6.0, 6.0]])


@pytest.mark.parametrize("length, expected_method", [(1, "fallback:last_value"), (3, "fallback:last_value"), (20, "fallback:naive_conformal")])
def test_short_histories_fall_back_gracefully(length, expected_method):
    y = 10.0 + np.arange(length, dtype=float) % 3
    quantiles, method = EnsembleForecaster(small_config()).forecast(y)
    assert method == expected_method
    assert np.isfinite(quantiles).all()
    assert (quantiles[:, 1] >= quantiles[:, 0]).all()
    assert quantiles[0, 1] > 0


def test_conformal_band_covers_about_ninety_percent_of_iid_noise():
    rng = np.random.default_rng(3)
    y = 50 + rng.normal(0, 5, 3000)
    origins = np.arange(0, len(y) - 1)
    points = np.full((len(origins), 1), 50.0)
    q = ConformalBand(calibration_windows=200).apply(y, origins, points, [0.5, 0.9])
    ok = ~np.isnan(q[:, 0, 1])
    covered = y[origins[ok] + 1] <= q[ok, 0, 1]
    assert 0.87 < covered.mean() < 0.93
    # The band uses only residuals already known: the first origins have none.
    assert np.isnan(q[0, 0, 1])


def test_relative_band_scales_with_the_level():
    rng = np.random.default_rng(4)
    level = np.where(np.arange(2000) < 1000, 10.0, 1000.0)
    y = level * np.exp(rng.normal(0, 0.1, 2000))
    origins = np.arange(len(y) - 1)
    q = ConformalBand(calibration_windows=300, relative=True).apply(y, origins, level[origins][:, None], [0.9])
    low, high = q[900, 0, 0] / 10.0, q[1900, 0, 0] / 1000.0
    assert abs(low - high) < 0.05 and 1.05 < low < 1.25


def test_quantile_regression_widens_p90_when_the_series_turns_erratic():
    rng = np.random.default_rng(5)
    n = 40 * PERIOD
    scale = np.where((np.arange(n) // 50) % 2 == 0, 1.0, 10.0)  # calm and erratic spells alternate
    y = 1000 + np.cumsum(rng.normal(0, 1, n) * scale) * 0.1 + rng.normal(0, 1, n) * scale
    member = LagQuantileRegression(PERIOD, weekly=False)
    member.fit(y, len(y), 1)
    recent = np.arange(n - 1000, n - 1)
    settled = recent % 50 >= 10  # far enough into a spell for the volatility feature to see it
    calm = recent[settled & ((recent // 50) % 2 == 0)]
    erratic = recent[settled & ((recent // 50) % 2 == 1)]
    width = lambda o: (member.paths(y, o, 1)[:, 0, 1] - forward_fill(y)[o]).mean()
    assert width(erratic) > 3 * width(calm) > 0


def test_row_quantiles_match_numpy():
    rng = np.random.default_rng(6)
    rows = rng.normal(size=(40, 25))
    rows[rng.random(rows.shape) < 0.3] = np.nan
    np.testing.assert_allclose(row_quantiles(rows, [0.5, 0.9]), np.nanquantile(rows, [0.5, 0.9], axis=1).T)


def test_pinball_loss_weights_misses_by_tau():
    assert pinball_loss(np.array([10.0]), np.array([8.0]), 0.9)[0] == pytest.approx(1.8)
    assert pinball_loss(np.array([10.0]), np.array([12.0]), 0.9)[0] == pytest.approx(0.2)


def test_library_seasonal_member_forecasts_the_season():
    y = seasonal_signal(4, noise=0.5)
    member = SeasonalLibraryMember(PERIOD, refit_windows=4)
    origins = np.arange(len(y) - 8, len(y) - 4)
    paths = member.paths(y, origins, 3)
    for i, o in enumerate(origins):
        np.testing.assert_allclose(paths[i, :, 0], seasonal_signal(4)[o + 1 : o + 4], atol=5)
    assert (paths[..., 1] >= paths[..., 0]).all()


def test_config_errors_name_the_field_and_value():
    with pytest.raises(ValueError, match="members: unknown member 'arima'"):
        EnsembleConfig(members=("naive", "arima"))
    with pytest.raises(ValueError, match="horizon"):
        EnsembleConfig(horizon=0)


def test_many_series_at_once_match_one_at_a_time():
    # Per-series members only: the global gradient-boosting member learns from the whole batch by design.
    rng = np.random.default_rng(7)
    batch = np.stack([seasonal_signal(12, noise=2.0, seed=s) * rng.uniform(0.5, 3) for s in range(5)])
    batch[1, -40:-30] = np.nan  # a gap in one series only
    batch[2, -60:] += 150  # a level shift in another
    per_series = tuple(m for m in EnsembleConfig().members if m != "gradient_boosting")
    forecaster = EnsembleForecaster(small_config(members=per_series))
    quantiles, methods = forecaster.forecast_many(batch, chunk=2)
    assert quantiles.shape == (5, 4, 2)
    for row, series in enumerate(batch):
        single, method = forecaster.forecast(series)
        np.testing.assert_allclose(quantiles[row], single, rtol=1e-9)
        assert methods[row] == method


def test_many_series_need_a_two_dimensional_array():
    with pytest.raises(ValueError, match=r"y: expected a 2-D array"):
        EnsembleForecaster(small_config()).forecast_many(seasonal_signal(12))


def test_lag_linear_member_learns_that_today_repeats_yesterdays_change():
    # Every day has the same shape at a level that drifts: the change over the horizon equals the
    # day-ago change scaled by the level, which the regression should find.
    days = 8
    t = np.arange(days * PERIOD)
    level = np.linspace(1.0, 1.5, t.size)
    y = level * (100 + 50 * np.sin(2 * np.pi * t / PERIOD))
    member = LagLinearMember(PERIOD, ConformalBand(calibration_windows=48))
    member.fit(y, len(y), 3)
    origins = np.arange(len(y) - 30, len(y) - 3)
    points = member.point(y, origins, 3)[0]
    actual = y[origins[:, None] + np.arange(1, 4)[None, :]]
    assert np.abs(points / actual - 1).max() < 0.02
    paths = member.paths(y, origins, 3)
    assert paths.shape == (len(origins), 3, 2)
    assert (paths[..., 1] >= paths[..., 0] - 1e-9).all()


def test_conformal_band_recalibrated_in_blocks_reuses_the_block_quantiles():
    rng = np.random.default_rng(8)
    y = 50 + rng.normal(0, 5, 600)
    origins = np.arange(len(y) - 1)
    points = np.full((len(origins), 1), 50.0)
    every = ConformalBand(calibration_windows=100).apply(y, origins, points, [0.9])
    blocks = ConformalBand(calibration_windows=100, recalibrate_every=10).apply(y, origins, points, [0.9])
    # Block starts (multiples of 10) agree with the per-origin band; the rest repeat their block start.
    np.testing.assert_allclose(blocks[300:400:10], every[300:400:10])
    np.testing.assert_allclose(blocks[301:310], np.repeat(every[300:301], 9, axis=0))


def test_adaptive_band_recovers_coverage_sooner_after_the_noise_grows():
    rng = np.random.default_rng(9)
    scale = np.where(np.arange(2000) < 1000, 1.0, 3.0)
    y = 100 + rng.normal(0, 1, 2000) * scale
    origins = np.arange(len(y) - 1)
    points = np.full((len(origins), 1), 100.0)
    fixed = ConformalBand(calibration_windows=200).apply(y, origins, points, [0.5, 0.9])
    adaptive = ConformalBand(calibration_windows=200, adaptive_step=0.05).apply(y, origins, points, [0.5, 0.9])
    after = origins[1000:1100]  # the band's window still holds mostly calm residuals
    covered = lambda q: (y[after + 1] <= q[after, 0, 1]).mean()  # noqa: E731
    assert covered(adaptive) > covered(fixed) + 0.03
    # The P50 is not adapted, and the adapted level stays within tau +- adaptive_range.
    np.testing.assert_allclose(adaptive[..., 0], fixed[..., 0])
    assert np.nanmax(adaptive[200:, 0, 1] - 100) <= np.nanmax(np.abs(y - 100)) + 1e-9
