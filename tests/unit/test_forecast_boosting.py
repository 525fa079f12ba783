"""The gradient-boosting member: what it reads, what it learns, and when it trains."""

import numpy as np

from forecasting.boosting import BoosterCache, GradientBoostingMember, boosting_features, log_rates
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster

PERIOD = 24


def daily_ramps(days: int, series: int = 3, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """Series with one daily shape (a steep morning ramp) at different levels, with lognormal noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * PERIOD)
    shape = 1.0 + 0.8 * np.clip(np.sin(2 * np.pi * t / PERIOD), 0, None)
    levels = np.geomspace(10, 1000, series)[:, None]
    return levels * shape * np.exp(rng.normal(0, noise, (series, t.size)))


def test_features_read_nothing_after_the_origin():
    y = daily_ramps(10)
    origins = np.arange(8 * PERIOD, 9 * PERIOD)
    rows = np.zeros(len(origins), dtype=int)
    before = boosting_features(*log_rates(y), rows, origins, 3, PERIOD)
    changed = y.copy()
    changed[0, 9 * PERIOD :] *= 5  # the future of every origin above, and nothing else
    changed[0, origins[-1] + 1 :] = 1e6
    after = boosting_features(*log_rates(changed), rows, origins, 3, PERIOD)
    np.testing.assert_array_equal(before, after)


def test_features_keep_gaps_as_missing():
    y = daily_ramps(10)
    y[0, 8 * PERIOD - 1] = np.nan
    raw, level = log_rates(y)
    features = boosting_features(raw, level, np.array([0]), np.array([9 * PERIOD - 1]), 1, PERIOD)
    # The day-ago change starts at the missing window, so it is missing; the level carries over the gap.
    assert np.isnan(features[0, 5])
    assert np.isfinite(features[0, 0])


def test_member_learns_the_daily_ramp_and_a_calibrated_p90():
    y = daily_ramps(12)
    member = GradientBoostingMember(PERIOD, refit_windows=1, min_leaf_rows=10)
    end = 10 * PERIOD
    member.fit(y, end, 3)
    origins = np.arange(end, 12 * PERIOD - 3)
    paths = member.paths(y, origins, 3)
    assert paths.shape == (3, len(origins), 3, 2)
    actual = y[:, origins[:, None] + np.arange(1, 4)[None, :]]
    # The last value misses the ramp; the member follows it to within a few times the noise.
    naive_error = np.abs(np.log(y[:, origins, None] / actual)).mean()
    member_error = np.abs(np.log(paths[..., 0] / actual)).mean()
    assert member_error < 0.05 < naive_error
    coverage = (actual <= paths[..., 1]).mean()
    assert 0.8 <= coverage <= 0.98
    assert (paths[..., 1] >= paths[..., 0]).all()


def test_refits_within_a_block_reuse_the_trained_boosters():
    y = daily_ramps(10)
    cache = BoosterCache()
    member = GradientBoostingMember(PERIOD, refit_windows=PERIOD, cache=cache)
    member.fit(y, 8 * PERIOD + 3, 2)
    first = member._boosters
    member.fit(y, 8 * PERIOD + 20, 2)  # same block: trained on windows before 8 * PERIOD
    assert member._boosters is first
    member.fit(y, 9 * PERIOD, 2)
    assert member._boosters is not first


def test_a_fleet_trains_the_global_member_once_across_chunks(monkeypatch):
    y = daily_ramps(10, series=6)
    config = EnsembleConfig(horizon=3, period=PERIOD, selection_windows=48, calibration_windows=48,
                            members=("naive", "gradient_boosting"))
    forecaster = EnsembleForecaster(config)
    trained = []
    original = GradientBoostingMember._train

    def counting(self, history, horizon):
        trained.append(history.shape)
        return original(self, history, horizon)

    monkeypatch.setattr(GradientBoostingMember, "_train", counting)
    quantiles, methods = forecaster.forecast_many(y, chunk=2)
    assert quantiles.shape == (6, 3, 2) and np.isfinite(quantiles).all()
    # One training for member selection and one on the newest history, each over all six series.
    assert trained and all(shape[0] == 6 for shape in trained)
    assert len(trained) <= 2


def test_an_idle_model_is_forecast_idle_not_at_its_last_busy_level():
    y = daily_ramps(10)
    y[:, -PERIOD:] = 0.0  # every model went idle a day ago (scale-to-zero), observed as zero, not missing
    member = GradientBoostingMember(PERIOD, refit_windows=1, min_leaf_rows=10)
    member.fit(y, y.shape[1], 2)
    paths = member.paths(y, np.array([y.shape[1] - 1]), 2)
    assert (paths[..., 0] < 0.01).all()
