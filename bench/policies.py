#!/usr/bin/env python
"""Every policy on every development trace, in the simulator. A measurement, not a test.

    .venv/bin/python bench/policies.py                 # all traces, 2 worker processes
    .venv/bin/python bench/policies.py --traces azure-conv --workers 1

Writes bench/results/policies.json (everything, timelines included), bench/results/policies.md
(the tables) and bench/results/policies-<trace>.png (demand and replicas over time per policy).

Set-up, stated in the output too:
* profile h100-llama-3.1-8b (autoscaler/sim/profiles/, a source for every number);
* each trace scaled so that its busiest minute needs 10 replicas at the profile's sustainable
  rate (factor printed per trace); ServeGen: the slice SERVEGEN_SLICE of day 8 (its 10 days at
  ~80 req/s would take hours per policy), arrivals Gamma-renewal with CV 1.5;
* the oracle is tuned per trace to the cheapest sizing that still meets 99 % (see
  autoscaler/sim/runner.py:tune_oracle); static = the oracle's peak replica count, all the time;
* GPU budget = 2 x that peak (a cluster with room to double), shared by nothing else;
* metrics scraped every 15 s, rates over 60 s, each policy at its own published interval.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.sim.results import SLOS  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DAY = 86400
SERVEGEN_SLICE = (7 * DAY + 12 * 3600, 8 * DAY)      # day 8, 12:00-24:00
TRACES = {
    "azure-code": (None, None),
    "azure-conv": (None, None),
    "servegen-m-large": SERVEGEN_SLICE,
    "servegen-m-mid": SERVEGEN_SLICE,
    "servegen-m-small": SERVEGEN_SLICE,
}
PEAK_REPLICAS = 10.0
CV = 1.5
SEED = 0
PROFILE = "h100-llama-3.1-8b"
TARGET = 0.99


def _workload(trace):
    from autoscaler.sim.profile import load_profile
    from autoscaler.sim.traces import load_workload

    prof = load_profile(PROFILE)
    s0, s1 = TRACES[trace]
    return prof, load_workload(trace, profile=prof, peak_replicas=PEAK_REPLICAS, start_s=s0, end_s=s1, cv=CV,
                               seed=SEED)


def _config(budget):
    from autoscaler.sim.simulator import SimConfig

    return SimConfig(gpu_budget=budget)


def phase_oracle(trace):
    """Tune the oracle on `trace` (with no budget: it never needs more than its plan)."""
    from autoscaler.sim.oracle import oracle_plan
    from autoscaler.sim.runner import tune_oracle

    prof, w = _workload(trace)
    choice, res = tune_oracle(w, prof, _config(None))
    peak = int(oracle_plan(w, prof, choice.utilization, 60.0, choice.burst_s).max())
    res.notes.append(f"oracle: minutes sized to their busiest {choice.burst_s:g} s window at "
                     f"{choice.utilization:.0%} of the sustainable rate ({choice.tried} sizings tried)")
    return trace, choice, peak, res, {"requests": len(w), "scale": w.scale, "notes": w.notes,
                                      "start_s": w.start_s, "end_s": w.end_s}


def phase_policy(args):
    trace, name, choice, peak = args
    import traceback

    from autoscaler.sim.runner import make_sim_policy
    from autoscaler.sim.simulator import simulate

    try:
        prof, w = _workload(trace)
        pol = make_sim_policy(name, prof, w, static_replicas=peak, oracle=choice)
        return trace, name, simulate(w, pol, prof, _config(2 * peak))
    except Exception:  # one broken policy must not lose the other runs
        return trace, name, traceback.format_exc(limit=3)


def _fmt_att(a):
    s = f"{a * 100:.2f} %"
    return s if a >= TARGET else f"{s} (**{(a - TARGET) * 100:+.2f} pp**)"


def _verdict(rows):
    ws = rows.get("warmscale")
    oracle = rows.get("oracle")
    if ws is None:
        return "warmscale not run"
    parts = []
    ok_slo = ws.attainment >= TARGET
    parts.append(f"SLO {'met' if ok_slo else 'MISSED'} ({ws.attainment * 100:.2f} %)")
    passing = [r for n, r in rows.items() if n not in ("warmscale", "oracle") and r.attainment >= TARGET]
    cheaper = [f"{r.policy} ({r.gpu_hours:.1f})" for r in passing if r.gpu_hours <= ws.gpu_hours]
    parts.append("fewest GPU-h among baselines at 99 %" if not cheaper
                 else "beaten on GPU-h by " + ", ".join(cheaper))
    if oracle and oracle.gpu_hours > 0:
        ratio = ws.gpu_hours / oracle.gpu_hours
        parts.append(f"{ratio:.2f} x oracle ({'within' if ratio <= 1.25 else 'OVER'} 1.25 x)")
    return "; ".join(parts)


def write_reports(table, meta, speeds, wall, failed=()):
    from autoscaler.sim.plot import plot_timelines

    RESULTS.mkdir(parents=True, exist_ok=True)
    order = ["warmscale", "hpa-cpu", "keda", "knative", "aibrix", "static", "oracle"]
    md = ["# Policies in simulation", "",
          f"Profile `{PROFILE}`; SLO = TTFT <= 2 s and mean TPOT <= 100 ms (strict: 0.5 s / 50 ms), "
          "share of all requests (dropped ones count as misses). GPU-hours over the simulated span. "
          "A shortfall below 99 % is shown in pp. `x oracle` = GPU-hours / the clairvoyant oracle's; "
          "static = the oracle's peak, all the time. GPU budget = 2 x static. Every run starts with no "
          "history and the fleet sized to the first minute; 'after first 5 min' is the 2 s / 100 ms attainment "
          "over the requests that arrive after that (the target is judged on the whole run).", "",
          f"Simulator speed: median {statistics.median(speeds):,.0f} simulated requests per wall-second "
          f"per core (one process per run, {len(speeds)} runs, on a shared 2-core machine). "
          f"Whole benchmark: {wall / 60:.1f} min.", ""]
    for trace, name, err in failed:
        md += [f"**{name} on {trace} failed**: `{err.strip().splitlines()[-1]}`", ""]
    out = {"profile": PROFILE, "peak_replicas": PEAK_REPLICAS, "cv": CV, "seed": SEED,
           "servegen_slice_s": SERVEGEN_SLICE, "sim_requests_per_wall_s_median": statistics.median(speeds),
           "wall_s": wall, "traces": {}}
    for trace, rows in table.items():
        m = meta[trace]
        span_h = (m["end_s"] - m["start_s"]) / 3600
        md += [f"## {trace}", "",
               f"{m['requests']:,} requests over {span_h:.2f} h (trace time {m['start_s'] / 3600:.1f} h - "
               f"{m['end_s'] / 3600:.1f} h), rate x{m['scale']:.4g}. " + " ".join(n.rstrip('.') + "." for n in m["notes"]),
               "", "| policy | SLO 2 s / 100 ms | after first 5 min | SLO 0.5 s / 50 ms | TTFT p50 | TTFT p99 | GPU-h | "
                   "x oracle | cold-start waits | scale events | idle GPU | peak |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        oracle = rows.get("oracle")
        ordered = [rows[n] for n in order if n in rows] + [r for n, r in rows.items() if n not in order]
        for r in ordered:
            ratio = f"{r.gpu_hours / oracle.gpu_hours:.2f}" if oracle and oracle.gpu_hours else "-"
            warm = "-" if r.attainment_after_warmup is None else f"{r.attainment_after_warmup * 100:.2f} %"
            md.append(f"| {r.policy} | {_fmt_att(r.attainment)} | {warm} | {r.slo_attainment[SLOS[1].key] * 100:.2f} % | "
                      f"{_t(r.ttft_p50_s)} | {_t(r.ttft_p99_s)} | {r.gpu_hours:.2f} | {ratio} | "
                      f"{r.cold_start_waits} | {r.scale_events} | {r.idle_gpu_share * 100:.0f} % | {r.peak_replicas} |")
        md += ["", f"warmscale: {_verdict(rows)}.", "", f"![{trace}](policies-{trace}.png)", ""]
        plot_timelines(ordered, RESULTS / f"policies-{trace}.png",
                       title=f"{trace} (rate x{m['scale']:.3g}, {span_h:.1f} h), {PROFILE}")
        out["traces"][trace] = {**m, "verdict": _verdict(rows),
                                "results": {r.policy: r.to_dict(timeline=True) for r in ordered}}
    (RESULTS / "policies.md").write_text("\n".join(md) + "\n")
    (RESULTS / "policies.json").write_text(json.dumps(out, indent=1))


def _t(x):
    return "-" if x is None else (f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated subset of " + ", ".join(TRACES))
    ap.add_argument("--policies", default="all")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from autoscaler.sim.runner import ALL_POLICIES

    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    policies = ALL_POLICIES() if args.policies == "all" else args.policies.split(",")
    t0 = time.perf_counter()
    table: dict = {t: {} for t in traces}
    meta, choices = {}, {}
    failed: list = []
    with ProcessPoolExecutor(args.workers) as pool:
        # biggest first so that the two workers finish together
        for trace, choice, peak, res, m in pool.map(phase_oracle, sorted(traces, key=lambda t: "azure" in t)):
            choices[trace] = (choice, peak)
            meta[trace] = m
            if "oracle" in policies:
                table[trace]["oracle"] = res
            print(f"[{time.perf_counter() - t0:6.0f} s] {trace}: oracle {res.attainment * 100:.2f} %, "
                  f"{res.gpu_hours:.2f} GPU-h, peak {peak}", flush=True)
        jobs = [(t, p, *choices[t]) for t in traces for p in policies if p != "oracle"]
        jobs.sort(key=lambda j: "azure" in j[0])
        for trace, name, res in pool.map(phase_policy, jobs):
            if isinstance(res, str):
                failed.append((trace, name, res))
                print(f"[{time.perf_counter() - t0:6.0f} s] {trace}: {name} FAILED\n{res}", flush=True)
                continue
            table[trace][name] = res
            print(f"[{time.perf_counter() - t0:6.0f} s] {trace}: {name:9s} {res.attainment * 100:6.2f} %  "
                  f"{res.gpu_hours:8.2f} GPU-h  {res.requests_per_wall_s:9,.0f} req/s", flush=True)
    wall = time.perf_counter() - t0
    speeds = [r.requests_per_wall_s for rows in table.values() for n, r in rows.items() if n != "oracle"]
    write_reports(table, meta, speeds, wall, failed)
    print((RESULTS / "policies.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
