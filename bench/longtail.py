"""Long-tail fleet: many sparse models, scale-to-zero against one replica per model, per cold-start tier.

    flock /work/coord/bench.lock .venv/bin/python bench/longtail.py [--hours 24] [--seeds 0,1,2]

A measurement in the simulator, not a test. Set-up (printed with the results, written to
bench/results/longtail.{md,json}):

* **Workload** (`build_fleet`): `--models` (20) models. Model k (0-based) follows the ServeGen
  series of m-large, m-mid, m-small in turn (k mod 3; ../shared/data/traces/servegen_dev, 10-minute
  aggregate rates, collection gaps interpolated as the simulator does everywhere). Its mean rate
  is set to a Zipf popularity, `top_rps` x (k+1)^-`zipf` (1 request/min for the most popular
  model down to ~1 every 2 h for the 20th at the defaults): the factor on the series is that mean
  over the series' mean over **days 1-7** (the only data the derivation reads). The scored span is
  cut from **days 8-10** only: model k reads its series rotated by k x 3 days / models (rounded to
  whole 10-minute windows) inside days 8-10, so that the models peak at different hours, as teams
  in different time zones do; the rotation wraps around inside days 8-10. Arrivals are a
  Gamma-renewal process on the scaled rate (CV 1.5, as in bench/policies.py), token lengths drawn
  from the Azure 2023 conversation trace (the rate file has none).
* **Fleet**: `--nodes` x 8 GPUs shared by all models (enough for every arm), one GPU per replica,
  the H100 / Llama-3.1-8B profile; each tier arm is a node fleet on which every start after the
  first lands on that tier (`autoscaler.sim.nodes.fleet_for_tier`): `cold` (image pull + weights
  from S3 + engine start), `image` (weights from S3), `staged` (warmscale's warm pool staged every
  model on every node), `asleep` (`staged`, and a scaled-down engine sleeps `--sleep-s` in vLLM's
  sleep mode, holding and being charged for its GPU, before it exits).
* **Arms**, per tier and seed, the same arrivals: warmscale's policy at its defaults with
  `min_replicas` 0 (scale to zero) and with `min_replicas` 1 (one replica per model kept, the
  baseline), the policy told the tier's cold start (`ReplicaCapacity.cold_start_s`), direct 1 s
  scrapes of the engines and the router's arrivals and held requests (local mode; the router holds
  requests while a model has no Ready engine), a decision every 5 s, and one at once for a model
  whose request the router starts holding while nothing of it is starting (the activator, as the
  router ships it: `SimConfig.activator`; `--no-activator` decides on the 5 s schedule only). Both
  arms start with one Ready replica per model.
* **Measured**: GPU-hours of the whole fleet (every GPU an engine holds, awake or asleep), and the
  time to first token of the requests that arrived when their model had no Ready replica ("at
  zero"; held by the router), pooled over models; primary-SLO attainment beside them. Medians over
  the seeds with the range.

Targets (issue 14): >= 50 % fewer GPU-hours than one replica per model, and the p99 TTFT of requests
arriving at zero <= the tier's cold start + 2 s, at the warmest tier warmscale ships (the warm pool,
`staged`; sleep mode is vLLM's and warmscale's engines do not drive it, so `asleep` is shown as what
it would give).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autoscaler.policy.registry import make_policy  # noqa: E402
from autoscaler.sim.nodes import fleet_for_tier  # noqa: E402
from autoscaler.sim.profile import TIERS, load_profile  # noqa: E402
from autoscaler.sim.results import PRIMARY_SLO  # noqa: E402
from autoscaler.sim.sensing import SensingConfig  # noqa: E402
from autoscaler.sim.simulator import ModelSpec, SimConfig, Simulation  # noqa: E402
from autoscaler.sim.traces import (RateTrace, Workload, _lengths_pool, arrivals_from_rate, load_rate_trace,  # noqa: E402
                                   resolve_trace)

RESULTS = ROOT / "bench" / "results"
DAY = 86400.0
BASES = ("servegen-m-large", "servegen-m-mid", "servegen-m-small")
CV = 1.5


def build_fleet(models: int, top_rps: float, zipf: float, hours: float, offset_h: float, seed: int) -> tuple[list[Workload], list[dict]]:
    """The long-tail workloads (see the module docstring) and one line of derivation per model."""
    rng = np.random.default_rng(seed)
    lp, lo = _lengths_pool()
    series = {}
    for b in BASES:
        path, model = resolve_trace(b)
        series[b] = load_rate_trace(path, model)
    s0 = 7 * DAY + offset_h * 3600.0
    s1 = s0 + hours * 3600.0
    if s1 > 10 * DAY + 1e-9:
        raise ValueError(f"--offset-h {offset_h} + --hours {hours} runs past day 10")
    out, info = [], []
    for k in range(models):
        b = BASES[k % len(BASES)]
        rt = series[b]
        w = rt.window_s
        tune = (rt.starts >= 0) & (rt.starts < 7 * DAY)
        mean_17 = float(rt.rates[tune].mean())
        target = top_rps * (k + 1) ** -zipf
        factor = target / mean_17
        held = (rt.starts >= 7 * DAY) & (rt.starts < 10 * DAY)
        starts = rt.starts[held]
        rates = rt.rates[held]
        shift = int(round(k * rates.size / models))
        rot = RateTrace(rt.path, f"{rt.model}@+{shift * w / 3600:.1f}h", w, starts, np.roll(rates, -shift), rt.gaps)
        t = arrivals_from_rate(rot, s0, s1, factor, CV, rng)
        pick = rng.integers(0, lp.size, size=t.size)
        name = f"lt{k:02d}"
        out.append(Workload("longtail", name, t, lp[pick], lo[pick], s0, s1, factor, "rate", rt.path,
                            [f"{b} rotated {shift * w / 3600:.1f} h inside days 8-10, x{factor:.3g}"], rot, CV))
        info.append({"model": name, "series": b, "rotation_h": round(shift * w / 3600, 1),
                     "target_mean_rps": target, "days1_7_mean_rps": mean_17, "factor": factor,
                     "requests": int(t.size), "scored_mean_rps": t.size / (s1 - s0)})
    return out, info


def run_arm(workloads, profile, tier: str, min_replicas: int, nodes: int, sleep_s: float, seed: int,
            activator: bool = True) -> dict:
    cold_s = profile.cold_start.tier_s(tier)
    cap = profile.to_capacity().model_copy(update={"cold_start_s": cold_s})
    specs = [ModelSpec(w, make_policy("warmscale", cap, min_replicas=min_replicas), profile) for w in workloads]
    fleet = fleet_for_tier(tier, nodes=nodes, sleep_s=sleep_s)
    cfg = SimConfig(sensing=SensingConfig(mode="direct"), nodes=fleet,
                    initial_replicas={w.model: 1 for w in workloads}, timeline_interval_s=600.0,
                    activator=activator)
    sim = Simulation(specs, cfg, seed=seed)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    arrival = np.concatenate([w.arrival for w in workloads])
    ttft = sim.first - arrival
    ok = ~np.isnan(sim.done) & (sim.dropped == 0)
    held = sim.cold
    held_ok = held & ok
    tiers = {}
    for r in res:
        for k, v in r.tier_starts.items():
            tiers[k] = tiers.get(k, 0) + v
    n_att = sum(r.requests - r.unattainable for r in res)
    misses = sum(r.slo_misses.get(PRIMARY_SLO.key, 0) for r in res)
    ht = ttft[held_ok]
    return {
        "tier": tier, "min_replicas": min_replicas, "seed": seed, "tier_cold_start_s": cold_s,
        "gpu_hours": float(sum(r.gpu_hours for r in res)),
        "requests": int(arrival.size), "held_requests": int(held.sum()), "held_completed": int(held_ok.sum()),
        "held_ttft_p50_s": float(np.percentile(ht, 50)) if ht.size else None,
        "held_ttft_p99_s": float(np.percentile(ht, 99)) if ht.size else None,
        "held_ttft_max_s": float(ht.max()) if ht.size else None,
        "ttft_p99_s": float(np.percentile(ttft[ok], 99)) if ok.any() else None,
        "attainment": 1.0 - misses / max(1, n_att), "slo_misses": int(misses),
        "dropped": int((sim.dropped != 0).sum()), "starts_by_tier": tiers,
        "models_at_zero_share": _zero_share(res), "pokes": int(sum(m.pokes for m in sim.models)), "wall_s": wall,
    }


def _zero_share(res) -> float:
    """Share of model-time with no replica Ready, loading or draining, from the 10-minute timelines (approximate)."""
    tot = zero = 0
    for r in res:
        tl = r.timeline
        for a, b, c in zip(tl.get("ready", []), tl.get("loading", []), tl.get("draining", [])):
            tot += 1
            zero += (a + b + c) == 0
    return zero / tot if tot else 0.0


def _med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return float(np.median(vals)), float(min(vals)), float(max(vals))


def summarise(runs: list[dict], tiers: list[str], profile) -> list[dict]:
    rows = []
    for tier in tiers:
        z = [r for r in runs if r["tier"] == tier and r["min_replicas"] == 0]
        o = [r for r in runs if r["tier"] == tier and r["min_replicas"] == 1]
        by_seed_o = {r["seed"]: r for r in o}
        savings = [1.0 - r["gpu_hours"] / by_seed_o[r["seed"]]["gpu_hours"] for r in z if r["seed"] in by_seed_o]
        cold_s = profile.cold_start.tier_s(tier)
        row = {"tier": tier, "tier_cold_start_s": cold_s, "seeds": sorted(r["seed"] for r in z)}
        for key in ("gpu_hours", "held_requests", "held_ttft_p50_s", "held_ttft_p99_s", "attainment", "models_at_zero_share"):
            row[f"zero_{key}"] = _med([r[key] for r in z])
            row[f"one_{key}"] = _med([r[key] for r in o])
        row["savings"] = _med(savings)
        p99 = row["zero_held_ttft_p99_s"][0]
        row["target_savings_met"] = row["savings"][0] is not None and row["savings"][0] >= 0.5
        row["target_ttft_bound_s"] = cold_s + 2.0
        row["target_ttft_met"] = p99 is not None and p99 <= cold_s + 2.0
        starts = {}
        for r in z:
            for k, v in r["starts_by_tier"].items():
                starts.setdefault(k, []).append(v)
        row["zero_starts_by_tier"] = {k: float(np.median(v)) for k, v in starts.items()}
        rows.append(row)
    return rows


def _f(x, nd=2, pct=False):
    if x is None:
        return "-"
    return f"{x * 100:.{nd}f} %" if pct else f"{x:.{nd}f}"


def _mr(t, nd=2, pct=False):
    m, lo, hi = t
    if m is None:
        return "-"
    return f"{_f(m, nd, pct)} [{_f(lo, nd, pct)}-{_f(hi, nd, pct)}]"


def render(doc: dict) -> str:
    a = doc["args"]
    L = ["# Long-tail fleet: scale to zero against one replica per model, per cold-start tier (bench/longtail.py)", ""]
    L.append(f"Simulator, profile {doc['profile']}; {a['models']} models over {a['hours']:g} h of days 8-10 "
             f"(from day 8 + {a['offset_h']:g} h), seeds {', '.join(map(str, a['seeds']))}; medians over seeds with "
             f"[min-max]. Baseline: the same policy with min_replicas 1 on the same arrivals in the same run. "
             f"Command: `{doc['command']}`.")
    L.append("")
    L.append("| tier | tier cold start | GPU-h, scale to zero | GPU-h, one per model | fewer GPU-h | requests at zero | "
             "p50 TTFT at zero | p99 TTFT at zero | bound (cold + 2 s) | SLO attainment (zero / one) | starts by tier (zero) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["summary"]:
        L.append(f"| {r['tier']} | {r['tier_cold_start_s']:.2f} s | {_mr(r['zero_gpu_hours'])} | {_mr(r['one_gpu_hours'])} | "
                 f"{_mr(r['savings'], 1, True)} ({'met' if r['target_savings_met'] else 'missed'}) | "
                 f"{_mr(r['zero_held_requests'], 0)} | {_mr(r['zero_held_ttft_p50_s'])} s | {_mr(r['zero_held_ttft_p99_s'])} s "
                 f"({'met' if r['target_ttft_met'] else 'missed'}) | {r['target_ttft_bound_s']:.2f} s | "
                 f"{_f(r['zero_attainment'][0], 2, True)} / {_f(r['one_attainment'][0], 2, True)} | "
                 f"{', '.join(f'{k} {v:g}' for k, v in sorted(r['zero_starts_by_tier'].items()))} |")
    L.append("")
    L.append("## Targets (issue 14), at the warmest tier warmscale ships")
    L.append("")
    for line in doc["targets"]:
        L.append(f"- {line}")
    L.append("")
    L.append("## Workload (derived from days 1-7, scored on days 8-10)")
    L.append("")
    L.append(f"Zipf popularity: mean rate of model k = {a['top_rps']:g} x (k+1)^-{a['zipf']:g} req/s; factor = that / "
             "the series' days 1-7 mean; arrivals Gamma-renewal, CV 1.5; requests in the scored span of seed "
             f"{a['seeds'][0]}:")
    L.append("")
    L.append("| model | ServeGen series | rotation inside days 8-10 | target mean (req/h) | factor | requests scored |")
    L.append("|---|---|---|---|---|---|")
    for m in doc["workload"]:
        L.append(f"| {m['model']} | {m['series']} | {m['rotation_h']:g} h | {m['target_mean_rps'] * 3600:.1f} | "
                 f"{m['factor']:.3g} | {m['requests']} |")
    L.append("")
    L.append("## Set-up")
    L.append("")
    for line in doc["setup"]:
        L.append(f"- {line}")
    L.append("")
    if doc.get("findings"):
        L.append("## Findings")
        L.append("")
        for line in doc["findings"]:
            L.append(f"- {line}")
        L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--top-rps", type=float, default=1 / 60, help="mean rate of the most popular model (default 1/min)")
    p.add_argument("--zipf", type=float, default=1.6, help="Zipf exponent of the models' mean rates")
    p.add_argument("--hours", type=float, default=24.0, help="scored span (from day 8 + --offset-h)")
    p.add_argument("--offset-h", type=float, default=0.0)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tiers", default=",".join(TIERS))
    p.add_argument("--nodes", type=int, default=5, help="nodes of 8 GPUs")
    p.add_argument("--sleep-s", type=float, default=600.0, help="asleep tier: how long a scaled-down engine sleeps")
    p.add_argument("--profile", default="h100-llama-3.1-8b")
    p.add_argument("--no-activator", action="store_true",
                   help="decide on the policy's schedule only: a request held at zero does not make the policy "
                        "decide at once (SimConfig.activator off)")
    p.add_argument("--out", default=str(RESULTS / "longtail"), help="writes OUT.json and OUT.md")
    p.add_argument("--part", default=None, metavar="NAME",
                   help="write only the runs to OUT_part_NAME.json (to split the arms over several runs)")
    p.add_argument("--merge", action="store_true", help="summarise every OUT_part_*.json into OUT.{json,md}")
    a = p.parse_args(argv)
    if a.merge:
        return merge(Path(a.out))
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    profile = load_profile(a.profile)
    tiers = [t for t in a.tiers.split(",") if t.strip()]
    for t in tiers:
        if not profile.cold_start.has_tier(t) or profile.cold_start.tiers is None:
            raise SystemExit(f"error: profile {profile.name} has no cold-start tier {t!r}")
    runs, workload_info = [], None
    t_all = time.perf_counter()
    for seed in seeds:
        workloads, info = build_fleet(a.models, a.top_rps, a.zipf, a.hours, a.offset_h, seed)
        if workload_info is None:
            workload_info = info
        for tier in tiers:
            for mr in (0, 1):
                r = run_arm(workloads, profile, tier, mr, a.nodes, a.sleep_s, seed, not a.no_activator)
                runs.append(r)
                print(f"seed {seed} {tier:6s} min {mr}: {r['gpu_hours']:.2f} GPU-h, at zero {r['held_requests']} "
                      f"p99 TTFT {_f(r['held_ttft_p99_s'])} s, attainment {r['attainment'] * 100:.2f} %, "
                      f"starts {r['starts_by_tier']}, pokes {r['pokes']} ({r['wall_s']:.0f} s)", flush=True)
    args = {"models": a.models, "top_rps": a.top_rps, "zipf": a.zipf, "hours": a.hours, "offset_h": a.offset_h,
            "seeds": seeds, "tiers": tiers, "nodes": a.nodes, "sleep_s": a.sleep_s, "activator": not a.no_activator}
    command = "bench/longtail.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.part:
        part = Path(f"{a.out}_part_{a.part}.json")
        part.write_text(json.dumps({"command": command, "profile": profile.name, "args": args, "workload": workload_info,
                                    "runs": runs, "wall_s": time.perf_counter() - t_all}, indent=2))
        print(f"wrote {part}")
        return 0
    return write(Path(a.out), profile, args, [command], workload_info, runs, time.perf_counter() - t_all)


def merge(out: Path) -> int:
    parts = sorted(out.parent.glob(out.name + "_part_*.json"))
    if not parts:
        raise SystemExit(f"error: no {out}_part_*.json to merge")
    docs = [json.loads(p.read_text()) for p in parts]
    keys = ("models", "top_rps", "zipf", "hours", "offset_h", "nodes", "sleep_s", "activator")
    base = {k: docs[0]["args"].get(k) for k in keys}
    for d in docs[1:]:
        if {k: d["args"].get(k) for k in keys} != base or d["profile"] != docs[0]["profile"]:
            raise SystemExit(f"error: parts differ in their set-up: {base} vs {d['args']}")
    runs = [r for d in docs for r in d["runs"]]
    tiers = [t for t in TIERS if any(r["tier"] == t for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    args = dict(base, seeds=seeds, tiers=tiers)
    profile = load_profile(docs[0]["profile"])
    return write(out, profile, args, [d["command"] for d in docs], docs[0]["workload"], runs,
                 sum(d["wall_s"] for d in docs), parts=[p.name for p in parts])


def write(out: Path, profile, args: dict, commands: list[str], workload_info, runs, wall: float, parts=None) -> int:
    class A:  # attribute access for the set-up lines
        pass

    a = A()
    a.__dict__.update(args)
    tiers = args["tiers"]
    summary = summarise(runs, tiers, profile)
    shipped = "staged" if "staged" in tiers else None
    targets = []
    for r in summary:
        tag = " (warmest tier warmscale ships)" if r["tier"] == shipped else ""
        targets.append(f"{r['tier']}{tag}: fewer GPU-hours {_mr(r['savings'], 1, True)} against >= 50 %: "
                       f"{'met' if r['target_savings_met'] else 'MISSED'}; p99 TTFT at zero "
                       f"{_mr(r['zero_held_ttft_p99_s'])} s against <= {r['target_ttft_bound_s']:.2f} s: "
                       f"{'met' if r['target_ttft_met'] else 'MISSED'}")
    setup = [
        f"fleet: {fleet_for_tier('staged', nodes=a.nodes).gpus} GPUs on {a.nodes} nodes x 8; every tier arm: "
        + "; ".join(f"{t}: {fleet_for_tier(t, nodes=a.nodes, sleep_s=a.sleep_s).describe()}" for t in tiers),
        "sensing: " + SensingConfig(mode="direct").describe(),
        "policy: warmscale at its defaults (autoscaler/policy/warmscale.py: decision every 5 s, idle_grace_s 300 before "
        "scaling to zero, a held request or arrival orders one replica), told the tier's cold start",
        ("activator (as the router ships it; SimConfig.activator): a request the router starts holding for a model with "
         "nothing Ready, starting or pending makes the policy decide for that model at once, through the same stages "
         "as a tick; the 5 s schedule goes on" if a.activator else
         "NO ACTIVATOR (--no-activator): the policy decides on its 5 s schedule only; a held request waits for the "
         "next decision"),
        "GPU-hours: every GPU an engine holds from its start to its exit, awake or asleep, summed over models",
        "requests at zero: arrived when their model had no Ready replica (the router holds them until one is Ready, "
        "at most 600 s); TTFT from arrival to the first token",
        f"machine: {platform.platform()}, Python {platform.python_version()}; {wall:.0f} s of simulation in all",
    ]
    doc = {"bench": "longtail", "command": " && ".join(commands), "parts": parts,
           "profile": profile.name, "args": args,
           "tier_cold_starts_s": {t: profile.cold_start.tier_s(t) for t in tiers},
           "summary": summary, "targets": targets, "workload": workload_info, "setup": setup, "runs": runs}
    write_results(out, doc, render)
    return 0


def write_results(out: Path, doc: dict, render) -> None:
    """`out`.json and `out`.md (printed too); findings written by hand into the last JSON are kept."""
    if out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        if old.get("findings"):
            doc["findings"] = old["findings"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(render(doc))
    print(render(doc))


if __name__ == "__main__":
    raise SystemExit(main())
