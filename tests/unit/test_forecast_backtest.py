import argparse
import dataclasses
import json

import numpy as np
import pytest

from forecasting.backtest import backtest_series, backtest_together
from forecasting.cli import register
from forecasting.ensemble import EnsembleConfig
from forecasting.series import WindowedSeries


def ramp_series(days=10, period=24, seed=0):
    """A daily ramp whose height changes from day to day: neither yesterday nor the last value is right."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * period)
    level = np.repeat(rng.uniform(0.6, 1.4, days), period)
    daily = level * (100 + 80 * np.clip(np.sin(2 * np.pi * t / period), 0, None))
    return WindowedSeries("svc", 0.0, 3600.0, daily * np.exp(rng.normal(0, 0.03, t.size)))


def test_backtest_beats_the_baseline_on_a_daily_ramp_and_reports_rising_edges():
    series = ramp_series()
    config = EnsembleConfig(horizon=3, period=24, selection_windows=48, calibration_windows=48)
    result, origins, paths = backtest_series(series, config, first_target=7 * 24, refit_every=6)
    assert paths.shape == (len(origins), 3, 2)
    assert all(h.targets == 3 * 24 for h in result.ensemble)
    assert max(result.pinball_ratio()) < 0.9
    assert all(e.rising_targets > 0 for e in result.ensemble)
    assert all(e.rising_under_p90 <= b.rising_under_p90 for e, b in zip(result.ensemble, result.baseline))


def test_series_fitted_together_are_scored_each_on_its_own():
    config = EnsembleConfig(horizon=3, period=24, selection_windows=48, calibration_windows=48)
    first, second = ramp_series(seed=1), dataclasses.replace(ramp_series(seed=2), model="other")
    together = backtest_together([first, second], config, first_target=7 * 24)
    assert [r.model for r, _, _ in together] == ["svc", "other"]
    alone, _, _ = backtest_series(second, config, first_target=7 * 24)
    # The baseline does not depend on the other series; the ensemble may (its global member learns from both).
    assert [b.p90_pinball for b in together[1][0].baseline] == [b.p90_pinball for b in alone.baseline]
    with pytest.raises(ValueError, match="share their length"):
        backtest_together([first, dataclasses.replace(second, values=second.values[:-1])], config, 7 * 24)


def test_cli_backtest_prints_json_scores(tmp_path, capsys):
    path = tmp_path / "rates.csv"
    series = ramp_series(days=9, period=144)
    lines = ["window_start_s,model,category,aggregate_rate_rps,active_clients"]
    lines += [f"{600 * i},svc,language,{v:.3f},1" for i, v in enumerate(series.values)]
    path.write_text("\n".join(lines) + "\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["forecast", "backtest", "--trace", str(path), "--horizon", "2", "--json", "--refit-every", "36"])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["model"] == "svc"
    assert len(out["results"][0]["ensemble"]) == 2
    assert 0 < out["summary"]["mean_p90_pinball_ratio"] < 2


def test_cli_rejects_unknown_members_and_traces(capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["forecast", "backtest", "--trace", "servegen", "--horizon", "2", "--members", "naive,arima"])
    assert args.handler(args) == 2
    assert "unknown member 'arima'" in capsys.readouterr().err
    args = parser.parse_args(["forecast", "backtest", "--trace", "/no/such.csv", "--horizon", "2"])
    assert args.handler(args) == 2
    assert "neither a file nor a known trace" in capsys.readouterr().err
