"""Trace loading: clear errors for bad files (file, row, column), scaling, arrivals from rates."""
from __future__ import annotations

import numpy as np
import pytest

from autoscaler.sim.traces import (TraceError, arrivals_from_rate, load_rate_trace, load_request_trace,
                                   load_workload, resolve_trace, scale_requests, traces_dir)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _err(fn, *args):
    with pytest.raises(TraceError) as exc:
        fn(*args)
    return exc.value


def test_missing_column_names_file_row_and_column(tmp_path):
    p = _write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.97,10\n")
    e = _err(load_request_trace, p)
    assert e.path == str(p) and e.row == 1 and e.column == "GeneratedTokens"
    assert "t.csv" in str(e) and "row 1" in str(e) and "GeneratedTokens" in str(e)


def test_unsorted_timestamps_name_the_row(tmp_path):
    p = _write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                  "2023-11-16 18:17:03.9799600,10,2\n"
                                  "2023-11-16 18:17:05.0,10,2\n"
                                  "2023-11-16 18:17:04.0,10,2\n")
    e = _err(load_request_trace, p)
    assert (e.row, e.column) == (4, "TIMESTAMP") and "not sorted" in str(e)


def test_negative_timestamps_are_rejected(tmp_path):
    p = _write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n0.5,10,2\n-1.0,10,2\n")
    e = _err(load_request_trace, p)
    assert (e.row, e.column) == (3, "TIMESTAMP") and "negative" in str(e)


def test_bad_cells_and_short_rows(tmp_path):
    p = _write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n0.5,ten,2\n")
    assert (_err(load_request_trace, p).row, _err(load_request_trace, p).column) == (2, "ContextTokens")
    p = _write(tmp_path, "u.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n0.5,10,-2\n")
    assert _err(load_request_trace, p).column == "GeneratedTokens"
    p = _write(tmp_path, "v.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n0.5,10\n")
    assert (_err(load_request_trace, p).row, _err(load_request_trace, p).column) == (2, "GeneratedTokens")
    p = _write(tmp_path, "w.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,2\n")
    assert _err(load_request_trace, p).column == "TIMESTAMP"
    p = _write(tmp_path, "x.csv", "")
    assert _err(load_request_trace, p).row == 1


def test_rate_trace_errors(tmp_path):
    head = "window_start_s,model,category,aggregate_rate_rps,active_clients\n"
    p = _write(tmp_path, "r.csv", "window_start_s,model,category\n0,a,language\n")
    assert _err(load_rate_trace, p, "a").column == "aggregate_rate_rps"
    p = _write(tmp_path, "r2.csv", head + "0,a,language,1.0,3\n-600,a,language,1.0,3\n")
    e = _err(load_rate_trace, p, "a")
    assert (e.row, e.column) == (3, "window_start_s")
    p = _write(tmp_path, "r3.csv", head + "600,a,language,1.0,3\n0,a,language,1.0,3\n")
    assert _err(load_rate_trace, p, "a").row == 3
    p = _write(tmp_path, "r4.csv", head + "0,a,language,-1,3\n")
    assert _err(load_rate_trace, p, "a").column == "aggregate_rate_rps"
    p = _write(tmp_path, "r5.csv", head + "0,a,language,1,3\n0,b,language,1,3\n")
    assert "FILE::MODEL" in str(_err(load_rate_trace, p, None))
    assert _err(load_rate_trace, p, "zzz").column == "model"


def test_rate_trace_gaps_are_interpolated(tmp_path):
    head = "window_start_s,model,category,aggregate_rate_rps,active_clients\n"
    p = _write(tmp_path, "r.csv", head + "0,a,x,10,1\n600,a,x,0,1\n1200,a,x,30,1\n")
    rt = load_rate_trace(p, "a")
    assert rt.gaps == 1 and rt.rates.tolist() == [10, 20, 30]


def test_scaling_keeps_shape_and_multiplies_rate():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 1000, 5000))
    p = rng.integers(1, 100, t.size)
    o = rng.integers(1, 100, t.size)
    t2, p2, o2 = scale_requests(t, p, o, 3.5, np.random.default_rng(1))
    assert abs(t2.size / t.size - 3.5) < 0.05
    assert np.all(np.diff(t2) >= 0)
    h1, _ = np.histogram(t, bins=10, range=(0, 1000))
    h2, _ = np.histogram(t2, bins=10, range=(0, 1000))
    assert np.allclose(h2 / h1, 3.5, rtol=0.1)
    t3, _, _ = scale_requests(t, p, o, 0.25, np.random.default_rng(1))
    assert abs(t3.size / t.size - 0.25) < 0.03


def test_arrivals_from_rate_follow_rate_and_burstiness(tmp_path):
    head = "window_start_s,model,category,aggregate_rate_rps,active_clients\n"
    rows = "".join(f"{i * 600},a,x,{100 if i < 3 else 300},1\n" for i in range(6))
    rt = load_rate_trace(_write(tmp_path, "r.csv", head + rows), "a")
    for cv in (1.0, 2.0):
        t = arrivals_from_rate(rt, 0, 3600, 0.5, cv, np.random.default_rng(0))
        assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 3600
        early = np.sum(t < 1200) / 1200
        late = np.sum(t >= 2700) / 900
        assert early == pytest.approx(50, rel=0.1) and late == pytest.approx(150, rel=0.1)
        gaps = np.diff(t[t < 1200])
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.15)


def test_names_resolve_under_the_traces_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WARMSCALE_TRACES_DIR", str(tmp_path))
    assert traces_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="WARMSCALE_TRACES_DIR"):
        resolve_trace("azure-code")
    monkeypatch.delenv("WARMSCALE_TRACES_DIR")
    path, model = resolve_trace("servegen-m-mid")
    assert path.exists() and model == "m-mid"
    with pytest.raises(FileNotFoundError, match="azure-code"):
        resolve_trace("no-such-trace")


def test_workloads_are_scaled_so_the_peak_needs_the_stated_replicas():
    from autoscaler.sim.oracle import need_per_step
    from autoscaler.sim.profile import load_profile

    prof = load_profile()
    w = load_workload("azure-conv", profile=prof, peak_replicas=8)
    need = need_per_step(w.arrival, w.prompt, w.output, w.start_s, w.end_s, prof)
    assert need.max() == pytest.approx(8, rel=0.15)
    assert w.scale > 1 and any("repeated" in n for n in w.notes)
    s = load_workload("servegen-m-large", profile=prof, start_s=7 * 86400, end_s=7 * 86400 + 3600)
    assert s.start_s == 7 * 86400 and s.arrival.min() >= s.start_s and s.arrival.max() < s.end_s
    assert s.kind == "rate" and s.scale < 1 and s.burstiness_cv == 1.5


def test_partly_collected_windows_next_to_a_gap_are_gaps_too(tmp_path):
    # ServeGen's gaps end in a window holding ~1 % of its neighbours (collection resumed inside it):
    # taken as demand it would make a dip to near zero and a step back up that never happened.
    head = "window_start_s,model,category,aggregate_rate_rps,active_clients\n"
    rows = "0,a,x,1000,1\n600,a,x,0,1\n1200,a,x,14,1\n1800,a,x,1300,1\n2400,a,x,1300,1\n"
    rt = load_rate_trace(_write(tmp_path, "r.csv", head + rows), "a")
    assert rt.gaps == 2 and rt.rates.tolist() == [1000, 1100, 1200, 1300, 1300]


def test_long_context_workload_is_the_shipped_trace_with_prompts_scaled():
    from autoscaler.sim.traces import LONG_CONTEXT

    base = load_workload("azure-conv", factor=1.0, end_s=600)
    scaled = load_workload("azure-conv", factor=1.0, end_s=600, prompt_scale=16)
    assert np.array_equal(scaled.prompt, base.prompt * 16) and np.array_equal(scaled.output, base.output)
    assert any("16 x its recorded length" in n for n in scaled.notes)
    long = load_workload("azure-conv-long", factor=1.0, end_s=600)
    assert LONG_CONTEXT["azure-conv-long"] == ("azure-conv", 16.0)
    assert long.name == "azure-conv-long" and np.median(long.prompt) >= 10_000
    with pytest.raises(ValueError, match="prompt_scale"):
        load_workload("azure-conv", factor=1.0, prompt_scale=0)
