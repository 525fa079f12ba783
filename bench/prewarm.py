"""Warmscale with and without forecast pre-warming, in the simulator. A measurement, not a test.

    .venv/bin/python -m bench.prewarm [--hours 12] [--traces servegen-m-large,azure-code]

Set-up (printed with the results):
* profile h100-llama-3.1-8b (autoscaler/sim/profiles/); cold start = the profile's total, which is
  also the pre-warm lead time;
* each trace scaled so that its busiest minute needs 10 replicas at the profile's sustainable rate
  (the same scaling as bench/policies.py; the factor is printed); arrivals Gamma-renewal, CV 1.5;
* ServeGen: the forecaster is fed days 1-7 (10-minute windows, the simulator's scaled rates), then
  the simulated slice starts on day 8 at 12:00 and lasts `--hours` (days 8-10 in full would take
  hours per run on this machine); Azure (one hour each): the forecaster starts empty and learns
  as the hour goes, on 1-minute windows;
* the planner plans for the forecast P90 (`--quantile`) one cold start ahead at the policy's target
  utilisation (0.85, `--utilisation`), with requests per replica = 1 / (mean prompt / prefill tok/s + mean output / decode tok/s),
  the policy's own capacity arithmetic;
* "cold-start waits" is the simulator's count of requests held because no replica was Ready;
  "SLO misses" are requests outside the primary SLO; all runs use the same arrivals (same seed);
* modes: reactive (warmscale alone), prewarm (the policy gets the floor and the forecast, which it
  also turns into a need of its own; a fallback forecast made without enough history to choose
  members is withheld, see forecasting/prewarm.py), prewarm_floor_only (the policy gets only the floor).

Writes bench/results/prewarm.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from autoscaler.sim.prewarm import feed_history
from autoscaler.sim.profile import load_profile
from autoscaler.sim.results import PRIMARY_SLO
from autoscaler.sim.runner import make_sim_policy
from autoscaler.sim.simulator import SimConfig, simulate
from autoscaler.sim.traces import load_workload
from forecasting.ensemble import EnsembleConfig, EnsembleForecaster
from forecasting.planner import PlannerConfig, PrewarmPlanner
from forecasting.prewarm import ForecastPrewarmer

RESULTS = Path(__file__).resolve().parent / "results"
DAY = 86400.0
PROFILE = "h100-llama-3.1-8b"
PEAK_REPLICAS = 10.0
CV = 1.5
SEED = 0
TARGET_UTILISATION = 0.85
TRACES = ("servegen-m-large", "servegen-m-mid", "servegen-m-small", "azure-code", "azure-conv")


def make_prewarmer(workload, capacity, window_s: float, period: int, utilisation: float, quantile: str,
                   share_forecast: bool) -> ForecastPrewarmer:
    mean_prompt = float(np.mean(workload.prompt))
    mean_output = float(np.mean(workload.output))
    planner = PrewarmPlanner(PlannerConfig.from_capacity(capacity, mean_prompt, mean_output, target_utilisation=utilisation,
                                                         quantile=quantile, hold_s=2 * window_s))
    span = 144 if period >= 144 else 12
    forecaster = EnsembleForecaster(EnsembleConfig(horizon=6, period=period, selection_windows=span, calibration_windows=span))
    return ForecastPrewarmer(planner, forecaster, window_s=window_s, cold_start_s=capacity.cold_start_s,
                             share_forecast=share_forecast)


MODES = {"reactive": None, "prewarm": True, "prewarm_floor_only": False}  # value: share the forecast with the policy


def run_trace(trace: str, hours: float, profile, utilisation: float, quantile: str) -> dict:
    capacity = profile.to_capacity()
    if trace.startswith("servegen"):
        start, end = 7 * DAY + 12 * 3600, 7 * DAY + 12 * 3600 + hours * 3600
        window_s, period = 600.0, 144
    else:
        start, end = None, None
        window_s, period = 60.0, 1440
    workload = load_workload(trace, profile=profile, peak_replicas=PEAK_REPLICAS, start_s=start, end_s=end, cv=CV, seed=SEED)
    config = SimConfig()
    runs = {}
    for mode, share_forecast in MODES.items():
        prewarmer = None
        if share_forecast is not None:
            prewarmer = make_prewarmer(workload, capacity, window_s, period, utilisation, quantile, share_forecast)
            if workload.rate_trace is not None:
                feed_history(prewarmer, workload, 0.0, workload.start_s, interval_s=60.0)
        started = time.perf_counter()
        result = simulate(workload, make_sim_policy("warmscale", profile, workload), profile, config, prewarm=prewarmer, seed=SEED)
        runs[mode] = {
            "cold_start_waits": result.cold_start_waits,
            "slo_misses": int(round((1 - result.attainment) * result.requests)),
            "attainment": result.attainment,
            "gpu_hours": result.gpu_hours,
            "ttft_p99_s": result.ttft_p99_s,
            "mean_replicas": result.mean_replicas,
            "peak_replicas": result.peak_replicas,
            "requests": result.requests,
            "decisions": result.decisions,
            "wall_s": time.perf_counter() - started,
        }
    reactive = runs["reactive"]
    changes = {
        mode: {
            key: _change(runs[mode][key], reactive[key]) for key in ("cold_start_waits", "slo_misses", "gpu_hours")
        }
        for mode in MODES if mode != "reactive"
    }
    return {
        "trace": trace,
        "scale": workload.scale,
        "slice_s": [workload.start_s, workload.end_s],
        "cold_start_s": capacity.cold_start_s,
        "runs": runs,
        "change_vs_reactive": changes,
    }


def _change(new: float, old: float) -> float | None:
    return None if old == 0 else (new - old) / old


def markdown(report: dict) -> str:
    lines = ["# Pre-warming in the simulator: warmscale with and without forecasting", "",
             f"Profile {PROFILE} (cold start {report['cold_start_s']:.0f} s), peak minute = {PEAK_REPLICAS:g} replicas, CV {CV}, seed {SEED}, primary SLO {PRIMARY_SLO.key}; "
             f"planner floor = forecast {report['planner']['quantile']} at {report['planner']['utilisation']:.0%} utilisation. "
             "prewarm: floor and forecast given to the policy; prewarm_floor_only: the floor alone.", "",
             "| trace | scale | mode | cold-start waits | SLO misses | attainment | GPU-hours | TTFT p99 s | mean replicas |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["traces"]:
        for mode, r in row["runs"].items():
            lines.append(f"| {row['trace']} | {row['scale']:.4g} | {mode} | {r['cold_start_waits']} | {r['slo_misses']} | "
                         f"{r['attainment']:.4f} | {r['gpu_hours']:.2f} | {_fmt(r['ttft_p99_s'])} | {r['mean_replicas']:.2f} |")
    lines += ["", "| trace | mode | cold-start waits change | SLO misses change | GPU-hours change |", "|---|---|---|---|---|"]
    for row in report["traces"]:
        for mode, c in row["change_vs_reactive"].items():
            lines.append(f"| {row['trace']} | {mode} | {_pct(c['cold_start_waits'])} | {_pct(c['slo_misses'])} | {_pct(c['gpu_hours'])} |")
    lines.append("")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "n/a (baseline 0)" if x is None else f"{x:+.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=12.0, help="length of the ServeGen slice from day 8 12:00")
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--cold-start-s", type=float, default=None,
                        help="lengthen the profile's cold start to this many seconds through its image-pull time "
                             "(a vLLM image pulled on a fresh node takes minutes); results go to prewarm_cold<N>.{json,md}")
    parser.add_argument("--utilisation", type=float, default=TARGET_UTILISATION, help="planner target utilisation")
    parser.add_argument("--quantile", choices=("p50", "p90"), default="p90", help="forecast quantile the floor covers")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where to write the results (default bench/results)")
    args = parser.parse_args(argv)
    profile = load_profile(PROFILE)
    name = "prewarm"
    if args.cold_start_s is not None:
        cold = profile.cold_start
        extra = args.cold_start_s - cold.total_s
        if extra < -cold.image_pull_s:
            parser.error(f"--cold-start-s must be >= {cold.total_s - cold.image_pull_s:.1f} (the profile without image pull)")
        profile = profile.model_copy(update={"cold_start": cold.model_copy(update={"image_pull_s": cold.image_pull_s + extra})})
        name = f"prewarm_cold{args.cold_start_s:.0f}"
    rows = []
    for trace in [t.strip() for t in args.traces.split(",") if t.strip()]:
        row = run_trace(trace, args.hours, profile, args.utilisation, args.quantile)
        rows.append(row)
        print(f"{trace}: " + json.dumps(row["change_vs_reactive"]), flush=True)
    report = {"profile": PROFILE, "cold_start_s": profile.cold_start.total_s, "planner": {"utilisation": args.utilisation, "quantile": args.quantile}, "traces": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    (args.out_dir / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
