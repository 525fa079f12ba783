"""`warmscale demo`: the replay it builds, its bad input, and one short run on a real CPU engine read
back from its demo.json."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autoscaler.local.demo import CONTEXT, MAX_OUTPUT, build_replay
from autoscaler.sim.profile import load_profile
from tests.local.conftest import WARMSCALE

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*WARMSCALE, "demo", "--plain", *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=ROOT)


def test_replay_is_the_slice_compressed_and_cut_in_halves():
    profile = load_profile("tiny-llama-cpu")
    r = build_replay("azure-conv", "20m:30m", 5.0, 1.0, profile)
    assert r.played_s == pytest.approx(600 / 5)
    assert r.second.any() and (~r.second).any()
    # each half starts at its own zero and lasts half the compressed slice
    assert r.at.min() >= 0 and r.at[~r.second].max() < 60 and r.at[r.second].max() < 60
    assert (r.output <= MAX_OUTPUT).all() and (r.prompt + r.output <= CONTEXT).all() and (r.output >= 1).all()
    # busiest compressed minute ~ one engine's sustainable rate at the clipped lengths (copies are drawn at random)
    t = np.where(r.second, r.at + 60, r.at)
    busiest = np.bincount((t // 60).astype(int)).max() / 60
    per_engine = profile.sustainable_rate(float(r.prompt.mean()), float(r.output.mean()))
    assert 0.5 < busiest / per_engine < 2.0
    twice = build_replay("azure-conv", "20m:30m", 5.0, 2.0, profile)
    assert 1.5 < len(twice.at) / len(r.at) < 2.5
    one_go = build_replay("azure-conv", "20m:30m", 5.0, 1.0, profile, to_zero=False)
    assert not one_go.second.any() and one_go.at.max() > 60


@pytest.mark.parametrize("args, named", [
    (["--slice", "50m:20m"], "slice"),
    (["--trace", "no-such-trace"], "no-such-trace"),
    (["--compress", "0"], "--compress"),
    (["--max-engines", "0"], "--max-engines"),
])
def test_bad_input_is_one_line_and_exit_2(args, named, tmp_path):
    proc = _demo(*args, "--results", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_short_demo_scales_from_zero_serves_everything_and_reports(tmp_path, tiny_model_dir):
    out = tmp_path / "report"
    proc = _demo("--slice", "20m:21m", "--compress", "10", "--no-to-zero", "--max-engines", "1",
                 "--results", str(out), timeout_s=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    live, sim = summary["live"], summary["simulated"]
    assert live["requests"] == summary["replay"]["requests"] > 0
    assert live["served"] == live["requests"] and live["rejected_503"] == 0 and live["failed"] == 0
    assert live["peak_engines"] == 1 and live["starts_from_zero"] == 1 and live["restarts"] == 0
    assert len(live["engine_start_s"]) == 1 and live["engine_start_s"][0] > 0
    assert summary["decisions"][0]["current"] == 0 and summary["decisions"][0]["reason"] == "activate_from_zero"
    assert live["ttft_p50_s"] > 0 and live["engine_seconds"] > 0 and live["peak_rss_gib"] > 0
    assert sim["requests"] == live["requests"] and sim["completed"] == live["requests"]
    assert max(summary["timeline"]["ready"]) == 1 and summary["sim_timeline"]["t"]
    assert (out / "demo.png").stat().st_size > 10_000 and (out / "report.md").exists()
