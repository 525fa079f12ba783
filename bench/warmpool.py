"""Warm-pool planner on the long-tail fleet: which models to stage where, when a node holds only a few.

    flock /work/coord/bench.lock .venv/bin/python bench/warmpool.py [--hours 24] [--seeds 0,1,2] [--per-node 2,4]

A measurement in the simulator, not a test. The long-tail workload of bench/longtail.py (20 sparse
models from ServeGen, Zipf popularity, rates derived from days 1-7, arrivals scored on days 8-10), the
H100 / Llama-3.1-8B profile, 5 nodes x 8 GPUs, warmscale's policy at its defaults with scale to zero,
and three arms on the same arrivals in the same run:

* **all staged** (the baseline, bench/longtail.py's `staged` arm): every model's weights on every
  node, as if disks were unlimited;
* **planned K**: each node's warm pool holds K checkpoints (each K of `--per-node`) (16.06 GB each); the planner
  (forecasting/warmpool.py) picks them from a forecast of each model's rate, here the model's days 1-7
  mean rate (the derivation bench/longtail.py already makes; no forecaster is fitted), and the nodes
  hold exactly the plan for the whole run (the DaemonSet evicts anything else; the plan is made once
  for the span);
* **LRU K, no plan**: the same budget without a planner: nothing staged up front, an engine that ran
  on a node leaves its weights there, least recently used dropped beyond K.

Measured per arm: GPU-hours, the time to first token of requests that arrived when their model had
no Ready replica (p50 / p99), and the starts by tier (`staged` = weights on the node, `image` =
from object storage). Medians over seeds with the range. Writes bench/results/warmpool_plan.{json,md}.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autoscaler.contract import DemandForecast  # noqa: E402
from autoscaler.policy.registry import make_policy  # noqa: E402
from autoscaler.sim.nodes import NodeFleet, fleet_for_tier  # noqa: E402
from autoscaler.sim.profile import load_profile  # noqa: E402
from autoscaler.sim.sensing import SensingConfig  # noqa: E402
from autoscaler.sim.simulator import ModelSpec, SimConfig, Simulation  # noqa: E402
from bench.longtail import build_fleet, write_results  # noqa: E402
from forecasting.warmpool import (WarmPoolConfig, WarmPoolModel, WarmPoolNode, demand_from_forecasts,  # noqa: E402
                                  plan_warm_pool)

RESULTS = ROOT / "bench" / "results"
# The planner's chance that a staged node has no free GPU for a start: None derives it from the forecast
# (forecasting/warmpool.py); `--busy` sets it (the first run of this benchmark used 0.1).


def make_plan(info: list[dict], profile, nodes: int, per_node: int, hours: float,
              busy: float | None = None) -> tuple[dict, dict]:
    """The planner's placement for the fleet: {node index: [models]} and the plan's JSON."""
    size = round(profile.cold_start.weights_gb * 1e9)
    saving = profile.cold_start.tier_s("image") - profile.cold_start.tier_s("staged")
    horizon = hours * 3600.0
    models = [WarmPoolModel(name=m["model"], location=f"s3://models/{m['model']}", bytes=size, saving_s=saving)
              for m in info]
    config = WarmPoolConfig(horizon_s=horizon, models=models, busy_probability=busy,
                            nodes=[WarmPoolNode(name=f"n{k}", disk_bytes=per_node * size, gpus=8) for k in range(nodes)])
    forecasts = {m["model"]: [DemandForecast(m["model"], 0.0, horizon / 2, m["target_mean_rps"], m["target_mean_rps"])]
                 for m in info}
    demand = {m.name: demand_from_forecasts(m, forecasts[m.name], 0.0, horizon) for m in models}
    plan = plan_warm_pool(config, demand)
    return {int(n[1:]): names for n, names in plan.nodes.items()}, plan.to_json()


def run_arm(arm: str, workloads, profile, nodes: int, per_node: int | None, placement: dict, seed: int) -> dict:
    cap = profile.to_capacity().model_copy(update={"cold_start_s": profile.cold_start.tier_s("staged")})
    specs = [ModelSpec(w, make_policy("warmscale", cap, min_replicas=0), profile) for w in workloads]
    if arm == "all staged":
        fleet = fleet_for_tier("staged", nodes=nodes)
    elif arm.startswith("planned"):
        fleet = NodeFleet(nodes=nodes, image_cached=True, prestage=False, keep_weights=False)
    else:
        fleet = NodeFleet(nodes=nodes, image_cached=True, prestage=False, keep_weights=True, staged_per_node=per_node)
    cfg = SimConfig(sensing=SensingConfig(mode="direct"), nodes=fleet,
                    initial_replicas={w.model: 1 for w in workloads}, timeline_interval_s=600.0)
    sim = Simulation(specs, cfg, seed=seed)
    if arm.startswith("planned"):
        for k, names in placement.items():
            for name in names:
                sim.nodes[k].stage(name, None)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    arrival = np.concatenate([w.arrival for w in workloads])
    ttft = sim.first - arrival
    ok = ~np.isnan(sim.done) & (sim.dropped == 0)
    ht = ttft[sim.cold & ok]
    starts: dict[str, int] = {}
    for r in res:
        for k, v in r.tier_starts.items():
            starts[k] = starts.get(k, 0) + v
    return {"arm": arm, "per_node": per_node, "seed": seed, "gpu_hours": float(sum(r.gpu_hours for r in res)),
            "held_requests": int(sim.cold.sum()),
            "held_ttft_p50_s": float(np.percentile(ht, 50)) if ht.size else None,
            "held_ttft_p99_s": float(np.percentile(ht, 99)) if ht.size else None,
            "starts_by_tier": starts, "staged_share": starts.get("staged", 0) / max(1, sum(starts.values())),
            "wall_s": wall}


def _med(values):
    values = [v for v in values if v is not None]
    return (float(np.median(values)), float(min(values)), float(max(values))) if values else (None, None, None)


def _mr(t, nd=2, pct=False):
    m, lo, hi = t
    if m is None:
        return "-"
    f = (lambda x: f"{x * 100:.{nd}f} %") if pct else (lambda x: f"{x:.{nd}f}")
    return f"{f(m)} [{f(lo)}-{f(hi)}]"


def render(doc: dict) -> str:
    a = doc["args"]
    lines = ["# Warm-pool planner on the long-tail fleet (bench/warmpool.py)", "",
             f"Simulator, profile {doc['profile']}; {a['models']} models over {a['hours']:g} h of days 8-10, seeds "
             f"{', '.join(map(str, a['seeds']))}; {a['nodes']} nodes x 8 GPUs; scale to zero (warmscale defaults). "
             f"Each node's warm pool holds K checkpoints ({doc['checkpoint_gb']:.2f} GB each) in the planned K and "
             f"LRU K arms, K in {a['per_node']}; the baseline stages every model on every node (same arrivals, same run). "
             f"Medians over seeds with [min-max]. Command: `{doc['command']}`.", "",
             "| arm | GPU-h | requests at zero | p50 TTFT at zero | p99 TTFT at zero | starts on a staged node |",
             "|---|---|---|---|---|---|"]
    for r in doc["summary"]:
        lines.append(f"| {r['arm']} | {_mr(r['gpu_hours'])} | {_mr(r['held_requests'], 0)} | "
                     f"{_mr(r['held_ttft_p50_s'])} s | {_mr(r['held_ttft_p99_s'])} s | {_mr(r['staged_share'], 1, True)} |")
    lines += ["", f"Tier cold starts: staged {doc['tier_s']['staged']:.2f} s, image (weights from S3) "
              f"{doc['tier_s']['image']:.2f} s.", ""]
    for k, plan in doc["plans"].items():
        lines += [f"## The plan for K = {k} (seed 0's workload derivation)", "", "| node | models staged |", "|---|---|"]
        for node, names in sorted(plan["nodes"].items()):
            lines.append(f"| {node} | {', '.join(names) or '-'} |")
        lines.append("")
    first = next(iter(doc["plans"].values()))
    lines += ["Expected starts over the span per model (the planner's demand): " + ", ".join(
        f"{m} {d['starts']:.1f}" for m, d in sorted(first["demand"].items())), ""]
    if doc.get("findings"):
        lines += ["## Findings", ""] + [f"- {f}" for f in doc["findings"]] + [""]
    lines += ["## Set-up", ""] + [f"- {s}" for s in doc["setup"]] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--per-node", default="2,4", help="checkpoints one node's warm pool holds (comma-separated arms)")
    p.add_argument("--profile", default="h100-llama-3.1-8b")
    p.add_argument("--busy", type=float, default=None,
                   help="the planner's busy_probability (default: derived from the forecast)")
    p.add_argument("--out", default=str(RESULTS / "warmpool_plan"))
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    per_node = [int(k) for k in a.per_node.split(",") if k.strip()]
    arms = [("all staged", None)] + [(name, k) for k in per_node for name in (f"planned {k}", f"LRU {k}, no plan")]
    profile = load_profile(a.profile)
    runs, plans = [], {}
    t_all = time.perf_counter()
    for seed in seeds:
        workloads, info = build_fleet(a.models, 1 / 60, 1.6, a.hours, 0.0, seed)
        placements = {}
        for k in per_node:
            placements[k], pj = make_plan(info, profile, a.nodes, k, a.hours, a.busy)
            plans.setdefault(str(k), pj)
        for arm, k in arms:
            r = run_arm(arm, workloads, profile, a.nodes, k, placements.get(k, {}), seed)
            runs.append(r)
            print(f"seed {seed} {arm:13s}: {r['gpu_hours']:.2f} GPU-h, at zero {r['held_requests']}, p99 TTFT "
                  f"{r['held_ttft_p99_s']}, starts {r['starts_by_tier']} ({r['wall_s']:.0f} s)", flush=True)
    summary = [{"arm": arm, **{k: _med([r[k] for r in runs if r["arm"] == arm])
                               for k in ("gpu_hours", "held_requests", "held_ttft_p50_s", "held_ttft_p99_s",
                                         "staged_share")}} for arm, _ in arms]
    out = Path(a.out)
    doc = {"bench": "warmpool_plan", "command": "bench/warmpool.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "profile": profile.name, "args": {"models": a.models, "hours": a.hours, "seeds": seeds, "nodes": a.nodes,
                                             "per_node": per_node, "busy": a.busy},
           "checkpoint_gb": profile.cold_start.weights_gb,
           "tier_s": {t: profile.cold_start.tier_s(t) for t in ("image", "staged")},
           "summary": summary, "plans": plans, "runs": runs,
           "setup": [f"machine: {platform.platform()}, Python {platform.python_version()}; "
                     f"{time.perf_counter() - t_all:.0f} s of simulation in all",
                     "forecast given to the planner: each model's days 1-7 mean rate as its P90 over the span "
                     "(bench/longtail.py's derivation), no requests_per_replica (only starts from zero are counted); "
                     "horizon = the scored span; busy_probability "
                     + (f"{a.busy}" if a.busy is not None else "derived from the forecast (0: no peaks forecast)")
                     + ", planner defaults otherwise",
                     "planned arm: the plan staged up front and held for the span (keep_weights off: the DaemonSet "
                     "evicts what the plan leaves out); no re-planning inside the span"]}
    write_results(out, doc, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
