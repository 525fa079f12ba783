"""Regime-conditional (Mondrian) conformal bands: rising origins are calibrated on rising origins."""

import numpy as np
import pytest

from forecasting.conformal import ConformalBand
from forecasting.ensemble import EnsembleConfig, build_members

TAUS = (0.5, 0.9)


def alternating(n=40):
    # 10, 20, 10, 20, ...: an origin at 20 rose 100 % in one window (rising), one at 10 fell (steady).
    return np.array([10.0, 20.0] * (n // 2))


def naive_band(band, y, origins):
    points = y[origins][:, None]  # last value, horizon 1
    return band.apply(y, origins, points, TAUS)[:, 0, :]


def test_origins_are_rising_when_they_exceed_the_threshold_over_the_rise_span():
    band = ConformalBand(rise_windows=2, rise_threshold=0.1)
    y = np.array([10.0, 10.0, 11.0, 11.5, 10.0, 20.0])
    # origin 2: 11 vs 10 -> 10 % is not > 10 %; origin 3: 11.5 > 11; origin 4: 10 < 12.1; origin 5: 20 > 12.65
    assert band.rising(y, np.arange(2, 6)).tolist() == [False, True, False, True]
    assert not ConformalBand().rising(y, np.arange(2, 6)).any()


def test_each_regime_gets_the_quantiles_of_its_own_residuals():
    y = alternating()
    origins = np.arange(0, 39)
    pooled = naive_band(ConformalBand(calibration_windows=10, min_residuals=3), y, origins)
    regime = naive_band(ConformalBand(calibration_windows=10, min_residuals=3, rise_windows=1), y, origins)
    # From origin 12 on, every window holds 5 residuals of each sign: steady origins (at 10) were
    # followed by +10, rising ones (at 20) by -10.
    for o in range(12, 39):
        if y[o] == 20.0:
            # rising: own residuals all -10 -> P50 = P90 = 20 - 10; pooled: P90 of five -10 and five +10
            # is at position 0.9 x 9 = 8.1 of the sorted window, i.e. +10 -> 30
            assert regime[o].tolist() == [10.0, 10.0]
            assert pooled[o, 1] == pytest.approx(30.0)
        else:
            assert regime[o].tolist() == [20.0, 20.0]
            assert pooled[o, 1] == pytest.approx(20.0)


def test_a_regime_with_too_few_residuals_uses_all_of_them():
    y = np.array([10.0] * 20 + [20.0, 20.0])
    band = ConformalBand(calibration_windows=10, min_residuals=3, rise_windows=1)
    out = naive_band(band, y, np.arange(0, 21))
    # Origin 20 (20 after 10) is the first rising origin: no rising residual exists, so it takes the
    # pooled window of origins 10-19: nine residuals 0 and one +10 (19 -> 20). P90 at position
    # 0.9 x 9 = 8.1: 0 + 0.1 x 10 = 1 -> 20 + 1.
    assert out[20, 1] == pytest.approx(21.0)
    assert out[20, 0] == pytest.approx(20.0)


def test_adaptive_level_keeps_the_regime_split():
    y = alternating()
    origins = np.arange(0, 39)
    band = ConformalBand(calibration_windows=10, min_residuals=3, rise_windows=1, adaptive_step=0.05)
    out = naive_band(band, y, origins)
    # Each regime's window holds one value (+10 or -10), so any level gives the same quantile.
    assert [out[o, 1] for o in range(12, 16)] == [20.0, 10.0, 20.0, 10.0]


def test_many_series_get_their_own_regimes():
    y = np.stack([alternating(), alternating()[::-1].copy()])
    origins = np.arange(0, 39)
    band = ConformalBand(calibration_windows=10, min_residuals=3, rise_windows=1)
    out = band.apply(y, origins, y[:, origins][..., None], TAUS)[..., 0, 1]
    for s in range(2):
        for o in range(12, 39):
            assert out[s, o] == (10.0 if y[s, o] == 20.0 else 20.0)


def test_the_ensemble_config_turns_regimes_on_with_a_one_hour_rise_span():
    members = build_members(EnsembleConfig(period=144, members=("naive",)))
    assert members[0].band.rise_windows == 6 and members[0].band.rise_threshold == 0.1
    members = build_members(EnsembleConfig(period=144, members=("naive",), regime_bands=False))
    assert members[0].band.rise_windows == 0


def test_regime_rise_must_not_be_negative():
    with pytest.raises(ValueError, match="regime_rise"):
        EnsembleConfig(regime_rise=-0.1)
