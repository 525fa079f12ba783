"""bench/longtail.py: the long-tail workload is derived from days 1-7 and scored on days 8-10."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import longtail as bench  # noqa: E402

DAY = 86400.0


def test_fleet_rates_follow_zipf_from_days_1_to_7_and_arrivals_lie_in_days_8_to_10():
    ws, info = bench.build_fleet(models=6, top_rps=0.5, zipf=1.0, hours=6.0, offset_h=3.0, seed=0)
    assert [w.model for w in ws] == [f"lt{k:02d}" for k in range(6)]
    for k, (w, m) in enumerate(zip(ws, info)):
        assert m["target_mean_rps"] == pytest.approx(0.5 / (k + 1))
        rt = bench.load_rate_trace(*bench.resolve_trace(m["series"]))
        days17 = rt.rates[(rt.starts >= 0) & (rt.starts < 7 * DAY)].mean()
        # the factor comes from days 1-7 only
        assert m["factor"] == pytest.approx(m["target_mean_rps"] / days17)
        assert w.start_s == 7 * DAY + 3 * 3600 and w.end_s == 7 * DAY + 9 * 3600
        assert np.all((w.arrival >= w.start_s) & (w.arrival < w.end_s))
        # the rotated series is read from days 8-10 only
        assert w.rate_trace.starts.min() >= 7 * DAY and w.rate_trace.starts.max() < 10 * DAY
    # the models are rotated to different hours
    assert len({m["rotation_h"] for m in info}) == 6
    # the busiest model gets about its share of requests (Gamma arrivals: loose bound)
    assert info[0]["requests"] > info[5]["requests"]


def test_summary_compares_each_seed_with_its_own_baseline():
    runs = []
    for seed, (z, o) in enumerate([(4.0, 10.0), (6.0, 10.0), (5.0, 20.0)]):
        for mr, gh in ((0, z), (1, o)):
            runs.append({"tier": "staged", "min_replicas": mr, "seed": seed, "gpu_hours": gh, "held_requests": 5 * (1 - mr),
                         "held_ttft_p50_s": 24.0 if mr == 0 else None, "held_ttft_p99_s": 25.0 if mr == 0 else None,
                         "attainment": 0.9, "models_at_zero_share": 0.5, "starts_by_tier": {"staged": 3}})
    prof = bench.load_profile("h100-llama-3.1-8b")
    (row,) = bench.summarise(runs, ["staged"], prof)
    assert row["savings"] == (pytest.approx(0.6), pytest.approx(0.4), pytest.approx(0.75))
    assert row["target_savings_met"]
    assert row["target_ttft_bound_s"] == pytest.approx(25.7)
    assert row["target_ttft_met"]    # 25.0 <= 23.7 + 2
