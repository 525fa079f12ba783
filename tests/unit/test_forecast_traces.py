import math

import numpy as np
import pytest

from forecasting.series import InvalidSeriesError
from forecasting.traces import load_azure, load_servegen, load_trace


def write_servegen(path, rows):
    lines = ["window_start_s,model,category,aggregate_rate_rps,active_clients"]
    lines += [f"{t},{m},language,{r},3" for t, m, r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_servegen_zero_windows_and_partial_neighbours_are_gaps(tmp_path):
    rates = [100, 110, 120, 2, 0, 0, 3, 130, 125, 1.5]  # 2 and 3 touch the zero gap; 1.5 does not
    path = tmp_path / "rates.csv"
    write_servegen(path, [(600 * i, "m-mid", r) for i, r in enumerate(rates)] + [(600 * i, "m-large", 50) for i in range(10)])
    series = {s.model: s for s in load_servegen(path)}
    mid = series["m-mid"]
    assert len(mid) == 10 and mid.window_s == 600
    assert [math.isnan(v) for v in mid.values] == [False, False, False, True, True, True, True, False, False, False]
    assert mid.values[-1] == 1.5
    assert not np.isnan(series["m-large"].values).any()


def test_azure_requests_aggregate_to_minute_rates(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:00.0000000,100,10\n"
        "2023-11-16 18:00:30.1234567,200,20\n"
        "2023-11-16 18:02:10.0000000,300,30\n"
        "2023-11-16 18:03:05.0000000,400,40\n"
    )
    s = load_azure(path, model="svc")
    # The last window (18:03) is partly observed and dropped; the empty minute is real zero demand.
    assert len(s) == 3
    np.testing.assert_allclose(s.values, [2 / 60, 0, 1 / 60])
    np.testing.assert_allclose(s.prompt_tokens, [300 / 60, 0, 300 / 60])
    np.testing.assert_allclose(s.generation_tokens, [30 / 60, 0, 30 / 60])


def test_named_traces_resolve_in_the_traces_dir(tmp_path, monkeypatch):
    (tmp_path / "servegen_dev").mkdir()
    write_servegen(tmp_path / "servegen_dev" / "servegen_language_rates_10min_days1-10.csv",
                   [(600 * i, m, 10 + i) for i in range(5) for m in ("m-large", "m-small")])
    monkeypatch.setenv("WARMSCALE_TRACES_DIR", str(tmp_path))
    assert [s.model for s in load_trace("servegen")] == ["m-large", "m-small"]
    assert [s.model for s in load_trace("servegen-m-small")] == ["m-small"]
    with pytest.raises(InvalidSeriesError, match="model 'm-huge' is not in trace"):
        load_trace("servegen-m-huge")
    with pytest.raises(FileNotFoundError, match="neither a file nor a known trace"):
        load_trace("nope")
