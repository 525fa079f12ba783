#!/usr/bin/env python
"""warmscale against its peers, each at its documented defaults and at its best, scored on held-out data.

    .venv/bin/python bench/policies.py                       # tune, then score (5 seeds, 2 workers)
    .venv/bin/python bench/policies.py --phase score         # score again with the tuned settings saved
    .venv/bin/python bench/policies.py --traces azure-conv --seeds 2 --workers 1

A measurement, not a test. Writes bench/results/policies.{json,md}, policies_tuning.json (the
sweep) and PNGs (policies-<trace>.png timelines, policies-frontier-<trace>.png frontiers).

Data discipline (nothing is tuned on what it is scored on):
* **tuning data** (the sweeps below, and every warmscale default): the first 30 min of each Azure
  trace and, for ServeGen, days 1-7 (TUNE_DAYS at TUNE_HOURS each, to bound the run time);
* **scoring data**: the Azure traces' last 30 min; ServeGen days 8-10 at SCORE_HOURS each.
Each window is simulated on its own (the fleet starts Ready at the first minute's need, with no
history) and a trace's windows are pooled: attainment over all their requests, GPU-hours summed.
Each trace's rate factor is fixed on its tuning data (busiest step there = PEAK_REPLICAS
replicas at the sustainable rate) and used unchanged on its scoring data.

Peers: (a) documented defaults (autoscaler/policy/<peer>.py cite their sources; Knative's target
is the documented 100 concurrent requests); (b) the best setting of their main knob on the
tuning data of that same trace (the cheapest setting reaching 99 %, else the best-attaining one):
SWEEPS below. Every run: profile PROFILE, cold start from it, Prometheus sensing at production
defaults (15 s scrapes with 1 s jitter and 1 % misses, answers 15 s late, rate() over 1 min),
except Knative, which reads its queue-proxies directly every second as the KPA does; GPU budget
= 2 x the peak of the clairvoyant plan at 80 % of the sustainable rate (`static` runs that
size all the time). A run whose fleet reached the budget is labelled budget-bound.

Bound: the exact optimum of autoscaler/sim/oracle.py (fewest GPU-hours keeping Ready capacity >=
the need of every 10 s step, cold start respected), per window and seed. `oracle` rows replay
that plan in the simulator to show the SLO it reaches.

Statistics: SEEDS seeds (arrivals, copy jitter, scrape jitter and misses), median with min-max;
SLO misses as counts beside percentages; request-level traces (Azure) apart from synthesised
arrivals (ServeGen rates, Gamma CV 1.5).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
DAY = 86400
H = 3600
PROFILE = "h100-llama-3.1-8b"
PEAK_REPLICAS = 10.0
CV = 1.5
TARGET = 0.99
RATIO_TARGET = 1.3
SEEDS = 5
TUNE_DAYS = (3, 6)             # ServeGen tuning windows: these days (1-based) ...
TUNE_HOURS = (17.0, 18.0)      # ... at these hours
SCORE_DAYS = (8, 9, 10)        # ServeGen scoring windows
SCORE_HOURS = (17.0, 17.5)
AZURE_SPLIT_S = 1800.0         # Azure: tune before, score after
AZURE = ("azure-code", "azure-conv", "azure-conv-long")
SERVEGEN = ("servegen-m-large", "servegen-m-mid", "servegen-m-small")
TRACES = (*AZURE, *SERVEGEN)
SMOOTH = ("azure-conv", *SERVEGEN)      # where the 1.3 x bound target applies
PEERS = ("hpa-cpu", "keda", "knative", "aibrix")
# the main knob of each peer (and warmscale's own, for its frontier only: its defaults stay as shipped)
SWEEPS: dict[str, list[dict]] = {   # each peer's default value left out (it runs as "(defaults)")
    "keda": [{"threshold": th, "polling_interval_s": pi} for th in (1.0, 2.0, 5.0, 10.0) for pi in (5.0, 15.0)
             if (th, pi) != (5.0, 15.0)],
    "knative": [{"target_concurrency": tc, "stable_window_s": sw} for tc in (10.0, 25.0, 50.0, 100.0)
                for sw in (30.0, 60.0) if (tc, sw) != (100.0, 60.0)],
    "aibrix": [{"target_value": v} for v in (0.1, 0.2, 0.3)],
    "hpa-cpu": [{"target_cpu_utilization": v} for v in (0.5, 0.95)],
    "warmscale": [{"target_utilization": v} for v in (0.7, 0.9)],
}


# ----------------------------------------------------------------------------- data
def windows(trace: str, phase: str) -> list[tuple[float | None, float | None]]:
    """The (start, end) windows of `trace` for phase 'tune' or 'score'."""
    if trace in AZURE:
        return [(None, AZURE_SPLIT_S)] if phase == "tune" else [(AZURE_SPLIT_S, None)]
    days, (h0, h1) = (TUNE_DAYS, TUNE_HOURS) if phase == "tune" else (SCORE_DAYS, SCORE_HOURS)
    return [((d - 1) * DAY + h0 * H, (d - 1) * DAY + h1 * H) for d in days]


def _hhmm(h: float) -> str:
    return f"{int(h):02d}:{int(round((h % 1) * 60)):02d}"


@lru_cache(maxsize=None)
def _profile():
    from autoscaler.sim.profile import load_profile

    return load_profile(PROFILE)


@lru_cache(maxsize=None)
def factor(trace: str) -> float:
    """The rate factor fixed on the trace's tuning data."""
    from autoscaler.sim.traces import scale_factor

    if trace in AZURE:
        return scale_factor(trace, _profile(), PEAK_REPLICAS, None, AZURE_SPLIT_S)
    return scale_factor(trace, _profile(), PEAK_REPLICAS, 0.0, 7 * DAY)


@lru_cache(maxsize=4)
def workload(trace: str, window: tuple, seed: int):
    from autoscaler.sim.traces import load_workload

    return load_workload(trace, factor=factor(trace), start_s=window[0], end_s=window[1], cv=CV, seed=seed)


@lru_cache(maxsize=4)
def plans(trace: str, window: tuple, seed: int):
    """(the bound: exact optimum, the 80 % plan whose peak sizes static and the budget)."""
    from autoscaler.sim.oracle import optimal_plan

    w = workload(trace, window, seed)
    return optimal_plan(w, _profile()), optimal_plan(w, _profile(), headroom=0.8)


# ----------------------------------------------------------------------------- one run
def run_one(job: dict) -> dict:
    """Simulate one (trace, window, seed, policy, setting); a compact row (timeline only if asked)."""
    import traceback

    try:
        return _run(job)
    except Exception:   # one broken run must not lose the others
        return {**job, "error": traceback.format_exc(limit=4)}


def _run(job: dict) -> dict:
    from autoscaler.policy.registry import make_policy
    from autoscaler.sim.oracle import OraclePolicy
    from autoscaler.sim.results import PRIMARY_SLO, SLOS
    from autoscaler.sim.sensing import SensingConfig
    from autoscaler.sim.simulator import SimConfig, simulate

    prof = _profile()
    w = workload(job["trace"], tuple(job["window"]), job["seed"])
    bound, p80 = plans(job["trace"], tuple(job["window"]), job["seed"])
    budget = 2 * p80.peak * prof.gpus_per_replica
    name = job["policy"]
    if name == "oracle":
        pol = OraclePolicy(w, prof, plan=bound)
    else:
        settings = dict(job.get("settings") or {})
        if name == "static":
            settings["replicas"] = p80.peak
        pol = make_policy(name, prof.to_capacity(), **settings)
    sensing = SensingConfig(mode="direct") if name == "knative" else SensingConfig()
    res = simulate(w, pol, prof, SimConfig(gpu_budget=budget, sensing=sensing), seed=job["seed"])
    row = {**job, "requests": res.requests, "attainable": res.requests - res.unattainable,
           "unattainable": res.unattainable, "misses": res.slo_misses[PRIMARY_SLO.key],
           "misses_strict": res.slo_misses[SLOS[1].key], "gpu_hours": res.gpu_hours,
           "bound_gpu_hours": bound.gpu_hours, "budget_gpus": budget, "peak": res.peak_replicas,
           "budget_bound": res.peak_replicas * prof.gpus_per_replica >= budget,
           "cold_start_waits": res.cold_start_waits, "scale_events": res.scale_events,
           "ttft_p99_s": res.ttft_p99_s, "dropped": sum(res.dropped.values()), "wall_s": res.wall_s,
           "requests_per_wall_s": res.requests_per_wall_s, "scale": w.scale}
    if job.get("keep"):
        row["result"] = res.to_dict(timeline=True)
    return row


# ----------------------------------------------------------------------------- pooling
def pool_rows(rows: list[dict]) -> dict:
    """One trace's windows pooled for one (policy, setting, seed)."""
    att = sum(r["attainable"] for r in rows)
    miss = sum(r["misses"] for r in rows)
    return {"attainment": (att - miss) / max(1, att), "misses": miss, "attainable": att,
            "unattainable": sum(r["unattainable"] for r in rows),
            "attainment_strict": (att - sum(r["misses_strict"] for r in rows)) / max(1, att),
            "gpu_hours": sum(r["gpu_hours"] for r in rows), "bound_gpu_hours": sum(r["bound_gpu_hours"] for r in rows),
            "budget_bound": any(r["budget_bound"] for r in rows), "budget_gpus": max(r["budget_gpus"] for r in rows),
            "peak": max(r["peak"] for r in rows), "cold_start_waits": sum(r["cold_start_waits"] for r in rows),
            "scale_events": sum(r["scale_events"] for r in rows)}


def med_range(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def summarise(rows: list[dict]) -> dict:
    """(policy, setting-key) -> seeds pooled per trace -> median and range over seeds."""
    by: dict = {}
    for r in rows:
        if "error" in r:
            continue
        key = (r["trace"], r["label"], r["seed"])
        by.setdefault(key, []).append(r)
    per_seed: dict = {}
    for (trace, label, seed), rs in by.items():
        per_seed.setdefault((trace, label), []).append(pool_rows(rs))
    out: dict = {}
    for (trace, label), ps in per_seed.items():
        first = next(r for r in rows if r.get("trace") == trace and r.get("label") == label and "error" not in r)
        s = {k: med_range([p[k] for p in ps]) for k in ("attainment", "misses", "gpu_hours", "bound_gpu_hours",
                                                          "attainment_strict", "peak", "cold_start_waits",
                                                          "unattainable", "attainable", "scale_events")}
        s.update(policy=first["policy"], settings=first.get("settings") or {},
                 budget_bound_seeds=sum(p["budget_bound"] for p in ps), budget_gpus=ps[0]["budget_gpus"],
                 seeds=len(ps))
        out.setdefault(trace, {})[label] = s
    return out


# ----------------------------------------------------------------------------- phases
def _map(pool, jobs, t0, tag):
    out = []
    for i, r in enumerate(pool.map(run_one, jobs, chunksize=1), 1):
        out.append(r)
        if "error" in r:
            print(f"[{time.perf_counter() - t0:6.0f} s] {tag} {r['trace']} {r['label']} FAILED\n{r['error']}", flush=True)
        elif i % 10 == 0 or i == len(jobs):
            print(f"[{time.perf_counter() - t0:6.0f} s] {tag} {i}/{len(jobs)}", flush=True)
    return out


def _label(policy: str, settings: dict | None) -> str:
    if not settings:
        return f"{policy} (defaults)"
    return policy + " " + ",".join(f"{k}={v:g}" for k, v in sorted(settings.items()))


def tune(pool, traces, t0) -> dict:
    """Sweep every peer's knob (and warmscale's, for its frontier) on the tuning windows, seed 0."""
    jobs = []
    for trace in traces:
        for win in windows(trace, "tune"):
            for pol in (*PEERS, "warmscale"):
                for st in [None, *SWEEPS[pol]]:
                    jobs.append({"trace": trace, "window": win, "seed": 0, "policy": pol, "settings": st,
                                 "label": _label(pol, st)})
    jobs.sort(key=lambda j: j["trace"] in AZURE)   # long ServeGen runs first: the workers end together
    rows = _map(pool, jobs, t0, "tune")
    summary = summarise(rows)
    best = {}
    for trace, labels in summary.items():
        best[trace] = {}
        for pol in PEERS:
            cands = [(lab, s) for lab, s in labels.items() if s["policy"] == pol]
            ok = [c for c in cands if c[1]["attainment"]["median"] >= TARGET]
            pick = (min(ok, key=lambda c: c[1]["gpu_hours"]["median"]) if ok
                    else max(cands, key=lambda c: c[1]["attainment"]["median"]))
            best[trace][pol] = {"label": pick[0], "settings": pick[1]["settings"], "reached_target": bool(ok)}
    return {"summary": summary, "best": best, "rows": [{k: v for k, v in r.items() if k != "result"} for r in rows]}


def score(pool, traces, tuned: dict, seeds: int, t0) -> list[dict]:
    jobs = []
    for trace in traces:
        best = tuned["best"][trace]
        entries = [("warmscale", None, "warmscale (defaults)"), ("static", None, "static"),
                   ("oracle", None, "oracle")]
        for pol in PEERS:
            entries.append((pol, None, _label(pol, None)))
            if best[pol]["settings"]:
                entries.append((pol, best[pol]["settings"], "best: " + best[pol]["label"]))
        for seed in range(seeds):
            for i, win in enumerate(windows(trace, "score")):
                for pol, st, label in entries:
                    if seed > 0 and pol in ("static", "oracle"):
                        continue   # references, not contenders: one seed keeps the run inside its time budget
                    keep = seed == 0 and i == 0 and (label.startswith("best") or pol in ("warmscale", "oracle"))
                    jobs.append({"trace": trace, "window": win, "seed": seed, "policy": pol, "settings": st,
                                 "label": label, "keep": keep})
    jobs.sort(key=lambda j: j["trace"] in AZURE)
    return _map(pool, jobs, t0, "score")


# ----------------------------------------------------------------------------- verdicts and report
def verdict(trace: str, labels: dict) -> dict:
    ws = labels.get("warmscale (defaults)")
    if ws is None:
        return {"text": "warmscale not run"}
    att = ws["attainment"]["median"]
    gh = ws["gpu_hours"]["median"]
    bound = ws["bound_gpu_hours"]["median"]
    peers_at_target = {lab: s for lab, s in labels.items()
                       if s["policy"] in PEERS and s["attainment"]["median"] >= TARGET}
    cheaper = [f"{lab} ({s['gpu_hours']['median']:.2f} GPU-h)" for lab, s in peers_at_target.items()
               if s["gpu_hours"]["median"] <= gh]
    ratio = gh / bound if bound > 0 else math.nan
    slo_ok = att >= TARGET
    parts = [f"SLO {'met' if slo_ok else 'MISSED'}: {att * 100:.2f} % (median of {ws['seeds']} seeds; "
             f"{ws['misses']['median']:,.0f} of {ws['attainable']['median']:,.0f} attainable requests missed)"]
    if not peers_at_target:
        parts.append("no peer setting reaches 99 % here")
    elif cheaper:
        parts.append("peers at 99 % with no more GPU-h: " + ", ".join(cheaper))
    else:
        parts.append(f"fewer GPU-h than all {len(peers_at_target)} peer runs at 99 %")
    parts.append(f"{ratio:.2f} x the bound" + (f" (target <= {RATIO_TARGET:g} x: {'met' if ratio <= RATIO_TARGET else 'MISSED'})"
                                               if trace in SMOOTH else " (bursty trace: no ratio target)"))
    return {"text": "; ".join(parts), "slo_met": slo_ok, "beats_peers_at_target": slo_ok and not cheaper,
            "ratio_to_bound": ratio, "ratio_met": (ratio <= RATIO_TARGET) if trace in SMOOTH else None}


def _pct(mr: dict) -> str:
    m, lo, hi = mr["median"] * 100, mr["min"] * 100, mr["max"] * 100
    return f"{m:.2f} % ({lo:.2f}-{hi:.2f})"


def _num(mr: dict, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(mr['median'])} ({fmt.format(mr['min'])}-{fmt.format(mr['max'])})"


def table_md(labels: dict, order: list[str]) -> list[str]:
    md = ["| run | SLO attainment, median (range) | misses (of attainable) | GPU-h, median (range) | x bound | "
          "strict 0.5 s / 50 ms | peak | cold-start waits | budget-bound seeds |",
          "|---|---|---|---|---|---|---|---|---|"]
    for lab in order:
        s = labels.get(lab)
        if s is None:
            continue
        flag = "" if s["attainment"]["median"] >= TARGET else " **<99 %**"
        if s["policy"] in PEERS and s["scale_events"]["max"] == 0:
            lab = f"{lab} (never scaled: held the starting fleet)"
        ratio = s["gpu_hours"]["median"] / s["bound_gpu_hours"]["median"] if s["bound_gpu_hours"]["median"] else math.nan
        bb = f"{s['budget_bound_seeds']}/{s['seeds']}" + (" (budget-bound)" if s["budget_bound_seeds"] else "")
        md.append(f"| {lab} | {_pct(s['attainment'])}{flag} | {_num(s['misses'], '{:,.0f}')} of "
                  f"{s['attainable']['median']:,.0f} | {_num(s['gpu_hours'])} | {ratio:.2f} | "
                  f"{s['attainment_strict']['median'] * 100:.2f} % | {s['peak']['median']:.0f} | "
                  f"{s['cold_start_waits']['median']:,.0f} | {bb} |")
    return md


def _order(labels: dict) -> list[str]:
    head = ["warmscale (defaults)"]
    for pol in PEERS:
        head += sorted(lab for lab in labels if labels[lab]["policy"] == pol)
    return head + ["static", "oracle"]


def write_reports(traces, tuned, score_rows, seeds, wall, args) -> None:
    from autoscaler.sim.plot import plot_frontier, plot_timelines
    from autoscaler.sim.results import SimResult

    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = summarise(score_rows)
    speeds = [r["requests_per_wall_s"] for r in score_rows if "error" not in r]
    failed = [r for r in score_rows if "error" in r]
    md = ["# Policies in simulation: held-out scores", "",
          f"Profile `{PROFILE}` (cold start {_profile().cold_start.total_s:.1f} s). SLO per request: TTFT <= 2 s + "
          "that prompt's prefill time on an idle replica, and mean TPOT <= 100 ms (strict: 0.5 s / 50 ms, the same "
          "rule). Requests no replica could serve within it (longer than the model or KV cache takes) are "
          "*unattainable*, counted apart; attainment is over the attainable ones, dropped ones count as misses.",
          "",
          f"**Scored on held-out data only**: the Azure traces' last 30 min; ServeGen days "
          f"{', '.join(map(str, SCORE_DAYS))}, {_hhmm(SCORE_HOURS[0])}-{_hhmm(SCORE_HOURS[1])} each (windows pooled). "
          f"Peers' best settings and every warmscale default come from tuning data only: Azure's first 30 min, "
          f"ServeGen days {', '.join(map(str, TUNE_DAYS))} {_hhmm(TUNE_HOURS[0])}-{_hhmm(TUNE_HOURS[1])} (inside days 1-7). "
          f"`static` and `oracle` run on seed 0 only. "
          f"{seeds} seeds per run; median (min-max). GPU budget = 2 x the peak of the clairvoyant plan at 80 % "
          "of the sustainable rate (= 2 x static); runs whose fleet reached it are marked budget-bound. "
          "`x bound` = GPU-h / the exact optimum (autoscaler/sim/oracle.py: fewest GPU-h keeping Ready capacity "
          ">= each 10 s step's need, cold start respected); `oracle` replays that plan. Sensing: Prometheus at "
          "production defaults for all, Knative direct 1 s (its queue-proxy statistics).", "",
          f"Run: {args}; {len(score_rows) + len(tuned.get('rows', []))} simulations, {wall / 60:.1f} min on a "
          f"shared 2-core machine; simulator median {statistics.median(speeds) if speeds else 0:,.0f} requests "
          "per wall-second.", ""]
    for r in failed:
        md += [f"**{r['label']} on {r['trace']} (seed {r['seed']}) failed**: `{r['error'].strip().splitlines()[-1]}`", ""]
    out = {"profile": PROFILE, "seeds": seeds, "target": TARGET, "ratio_target": RATIO_TARGET, "cv": CV,
           "score_windows": {t: windows(t, "score") for t in traces},
           "tune_windows": {t: windows(t, "tune") for t in traces}, "best_settings": tuned["best"],
           "factors": {t: factor(t) for t in traces}, "wall_s": wall, "traces": {}}
    verdicts = {}
    for group, names in (("Request-level traces (Azure LLM inference 2023, each request replayed)", AZURE),
                         ("Synthesised arrivals (ServeGen rates, Gamma renewal CV 1.5, Azure-conv token lengths)",
                          SERVEGEN)):
        names = [t for t in names if t in summary]
        if not names:
            continue
        md += [f"## {group}", ""]
        for trace in names:
            labels = summary[trace]
            v = verdicts[trace] = verdict(trace, labels)
            tl = tuned["summary"].get(trace, {})
            md += [f"### {trace}", "", f"Rate x{factor(trace):.4g} (fixed on the tuning data). "
                   + _note(trace), ""]
            md += table_md(labels, _order(labels))
            md += ["", f"**warmscale**: {v['text']}.", ""]
            md += [f"Tuning data (seed 0), the sweep each best setting was picked from: warmscale defaults "
                   f"{_brief(tl.get('warmscale (defaults)'))}; " + "; ".join(
                       f"{pol} best `{tuned['best'][trace][pol]['label']}` {_brief(tl.get(tuned['best'][trace][pol]['label']))}"
                       for pol in PEERS) + ".", ""]
            keep = [r for r in score_rows if r.get("trace") == trace and "result" in r]
            if keep:
                res = [SimResult(**{k: v for k, v in r["result"].items()}) for r in keep]
                for r, row in zip(res, keep):
                    r.policy = row["label"]
                plot_timelines(res, RESULTS / f"policies-{trace}.png",
                               title=f"{trace}, first scoring window, seed 0 (rate x{factor(trace):.3g})")
                md += [f"![{trace}](policies-{trace}.png)", ""]
            plot_frontier(tl, labels, RESULTS / f"policies-frontier-{trace}.png", target=TARGET,
                          title=f"{trace}: settings on tuning data (points) and runs on scoring data (stars)")
            md += [f"![frontier {trace}](policies-frontier-{trace}.png)", ""]
            out["traces"][trace] = {"verdict": v, "scored": labels, "tuning": tl}
    md += ["## Verdict against the targets", "",
           "| trace | warmscale SLO (median) | beats every peer at 99 % on GPU-h | x bound (target <= 1.3 on smooth) |",
           "|---|---|---|---|"]
    for trace, v in verdicts.items():
        if "slo_met" not in v:
            continue
        rm = "-" if v["ratio_met"] is None else ("met" if v["ratio_met"] else "MISSED")
        md.append(f"| {trace} | {'met' if v['slo_met'] else 'MISSED'} | {'yes' if v['beats_peers_at_target'] else 'no'} | "
                  f"{v['ratio_to_bound']:.2f} ({rm}) |")
    md += ["", "What limits the ratio to the bound: the bound keeps Ready capacity at exactly each 10 s step's "
           "need at 100 % of the sustainable rate, and that plan, replayed, reaches "
           "(`oracle` rows) " + ", ".join(f"{t} {summary[t]['oracle']['attainment']['median'] * 100:.2f} %"
                                          for t in verdicts if "oracle" in summary[t]) + ": short of 99 % on the Azure traces, just above "
           "it on ServeGen with a thin margin on the strict SLO; a fleet needs a margin for bursts inside a step. `static` (the peak of the clairvoyant plan at 80 %, all the time) costs "
           + ", ".join(f"{t} {summary[t]['static']['gpu_hours']['median'] / summary[t]['static']['bound_gpu_hours']['median']:.2f} x"
                       for t in verdicts if "static" in summary[t]) + " the bound on these 30-min windows. "
           "A run that never scaled holds the fleet every run starts with (the first minute's need at 80 %, "
           "sized by the simulator from the trace itself), so on a short window it is a clairvoyant static fleet.",
           ""]
    (RESULTS / "policies.md").write_text("\n".join(md) + "\n")
    out["rows"] = [{k: v for k, v in r.items() if k != "result"} for r in score_rows]
    (RESULTS / "policies.json").write_text(json.dumps(out, indent=1, default=str))


def _note(trace: str) -> str:
    if trace == "azure-conv-long":
        return ("Long-context workload: azure-conv with every prompt x16 (median 16k tokens; the longest "
                "exceed the model's 131,072 and are unattainable).")
    if trace in AZURE:
        return "Each recorded request replayed ~factor times (copies jittered by up to 2 s)."
    return "Arrivals drawn from the 10-min rates (linear between window centres)."


def _brief(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['attainment']['median'] * 100:.2f} % / {s['gpu_hours']['median']:.2f} GPU-h"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated subset of " + ", ".join(TRACES))
    ap.add_argument("--phase", choices=("all", "tune", "score", "report"), default="all",
                    help="score reuses bench/results/policies_tuning.json; report rewrites the reports from the "
                         "runs saved in bench/results/policies_runs.json")
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    unknown = [t for t in traces if t not in TRACES]
    if unknown:
        print(f"error: unknown trace(s) {', '.join(unknown)}; expected among {', '.join(TRACES)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    tuning_path = RESULTS / "policies_tuning.json"
    runs_path = RESULTS / "policies_runs.json"
    if args.phase == "report":
        saved = json.loads(runs_path.read_text())
        write_reports(saved["traces"], json.loads(tuning_path.read_text()), saved["rows"], saved["seeds"],
                      saved["wall_s"], saved["args"])
        print((RESULTS / "policies.md").read_text())
        return 0
    with ProcessPoolExecutor(args.workers) as pool:
        if args.phase in ("all", "tune"):
            tuned = tune(pool, traces, t0)
            old = json.loads(tuning_path.read_text()) if tuning_path.exists() else {}
            for k in ("summary", "best"):
                tuned[k] = {**old.get(k, {}), **tuned[k]}
            tuned["rows"] = [r for r in old.get("rows", []) if r["trace"] not in traces] + tuned["rows"]
            RESULTS.mkdir(parents=True, exist_ok=True)
            tuning_path.write_text(json.dumps(tuned, indent=1, default=str))
            for trace in traces:
                print(trace, {p: b["label"] + ("" if b["reached_target"] else " (no setting reached 99 %)")
                              for p, b in tuned["best"][trace].items()}, flush=True)
            if args.phase == "tune":
                return 0
        else:
            tuned = json.loads(tuning_path.read_text())
        rows = score(pool, traces, tuned, args.seeds, t0)
    wall = time.perf_counter() - t0
    run_args = " ".join(sys.argv[1:]) or "defaults"
    runs_path.write_text(json.dumps({"traces": traces, "rows": rows, "seeds": args.seeds, "wall_s": wall,
                                     "args": run_args}, default=str))
    write_reports(traces, tuned, rows, args.seeds, wall, run_args)
    print((RESULTS / "policies.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
