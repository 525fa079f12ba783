"""How long one policy decision takes: 1,000 models x N decisions for each policy.

Target (issue): <= 1 ms per model per decision, i.e. 1,000 models in <= 1 s per loop.

Each round calls decide() once for every one of the 1,000 models (each model has its own
window state inside the policy object); the per-decision time of a round is its wall time /
1,000. Observations are built before timing, so only decide() is measured. The load follows a
per-model diurnal curve with noise, occasional queue bursts, replicas loading and a few missing
or stale metrics, so every code path (panic, trend, fail-static, stabilisation) is exercised.

Prints a table and writes bench/results/policy_speed.json and .md. Usage:
    .venv/bin/python bench/policy_speed.py [--models 1000] [--decisions 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoscaler.policy.capacity import H100_LLAMA3_8B  # noqa: E402
from autoscaler.policy.registry import POLICY_NAMES, make_policy  # noqa: E402
from autoscaler.policy.types import Observation  # noqa: E402

BUDGET_S = 1e-3  # 1 ms per model per decision


def build_observations(models: int, decisions: int, interval_s: float, seed: int) -> list[list[Observation]]:
    """rounds[i][m]: the observation of model m at decision i."""
    rng = random.Random(seed)
    cap = H100_LLAMA3_8B
    params = []
    for m in range(models):
        peak = rng.uniform(0.5, 40.0)            # requests/s at the daily peak
        phase = rng.uniform(0, 2 * math.pi)
        prompt = rng.choice((300, 1000, 2000, 4000))
        gen = rng.choice((30, 250, 500))
        params.append((f"model-{m:04d}", peak, phase, prompt, gen))
    rounds: list[list[Observation]] = []
    for i in range(decisions):
        t = i * interval_s
        row = []
        for name, peak, phase, prompt, gen in params:
            # a compressed "day" of 2 h so a short run sees rises and falls
            rate = max(0.0, peak * (0.55 + 0.45 * math.sin(2 * math.pi * t / 7200 + phase))
                       * rng.uniform(0.85, 1.15))
            busy = rate * (prompt / cap.prefill_tokens_per_s + gen / cap.decode_tokens_per_s)
            ready = max(1, math.ceil(busy / 0.85))
            loading = 1 if rng.random() < 0.05 else 0
            waiting = rng.choice((0.0, 0.0, 0.0, 0.0, 3.0, 40.0)) * ready
            running = min(ready * cap.max_num_seqs, rate * (gen * 0.03 + 0.1))
            kv = min(1.0, running * (prompt + gen / 2) / (ready * cap.kv_cache_tokens))
            p_tok, g_tok = rate * prompt, rate * gen
            r = rng.random()
            if r < 0.01:
                kv = None                          # missing metric
            metrics_time = t - 120.0 if 0.01 <= r < 0.02 else None   # stale
            row.append(Observation(
                model=name, time=t, ready_replicas=ready, loading_replicas=loading,
                waiting_requests=waiting, running_requests=running, kv_cache_usage=kv,
                request_rate=rate, prompt_token_rate=p_tok, generation_token_rate=g_tok,
                ttft_p95=rng.uniform(0.1, 2.5), cpu_utilization=rng.uniform(0.85, 0.99),
                metrics_time=metrics_time))
        rounds.append(row)
    return rounds


def time_policy(name: str, rounds: list[list[Observation]]) -> dict:
    kw = {"replicas": 8} if name == "static" else {}
    policy = make_policy(name, H100_LLAMA3_8B, **kw)
    decide = policy.decide
    per_round: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for row in rounds:
            t0 = time.perf_counter()
            for o in row:
                decide(o)
            per_round.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    models = len(rounds[0])
    per_decision = sorted(x / models for x in per_round)
    med = statistics.median(per_decision)
    p99 = per_decision[min(len(per_decision) - 1, int(0.99 * len(per_decision)))]
    return {
        "policy": name,
        "decisions": len(per_round) * models,
        "median_per_decision_us": med * 1e6,
        "p99_round_per_decision_us": p99 * 1e6,
        "max_round_per_decision_us": per_decision[-1] * 1e6,
        "median_round_ms": statistics.median(per_round) * 1e3,
        "ratio_to_budget": med / BUDGET_S,
        "meets_budget": med <= BUDGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--decisions", type=int, default=200, help="decisions per model (rounds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    # one decision every 5 s (warmscale's loop); each policy sees the same observations
    rounds = build_observations(args.models, args.decisions, 5.0, args.seed)
    build_s = time.perf_counter() - t0
    results = [time_policy(n, rounds) for n in POLICY_NAMES]

    hdr = (f"{'policy':<10} {'median/decision':>16} {'p99 round/decision':>19} "
           f"{'1,000 models':>13} {'x 1 ms budget':>14}")
    print(f"policy decision time: {args.models} models x {args.decisions} decisions "
          f"(observations built in {build_s:.1f} s, not timed)")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['policy']:<10} {r['median_per_decision_us']:>13.1f} us {r['p99_round_per_decision_us']:>16.1f} us "
              f"{r['median_round_ms']:>10.1f} ms {r['ratio_to_budget']:>13.4f}x")
    ok = all(r["meets_budget"] for r in results)
    print(f"budget 1 ms per decision: {'met by every policy' if ok else 'MISSED'}")

    meta = {
        "benchmark": "policy_speed",
        "models": args.models,
        "decisions_per_model": args.decisions,
        "seed": args.seed,
        "budget_per_decision_ms": BUDGET_S * 1e3,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "timed": "decide() only; wall time of a round of one decision per model / models",
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policy_speed.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        "# Policy decision speed",
        "",
        f"{args.models} models x {args.decisions} decisions per policy; Python {meta['python']} on "
        f"{meta['machine']} ({meta['cpus']} CPUs). Only `decide()` is timed; per-decision time = "
        "wall time of one round (one decision for every model) / models. Budget: 1 ms per decision "
        "(1,000 models in 1 s).",
        "",
        "| policy | median per decision | p99 round, per decision | 1,000 models (median round) | ratio to 1 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['policy']} | {r['median_per_decision_us']:.1f} us | {r['p99_round_per_decision_us']:.1f} us "
                     f"| {r['median_round_ms']:.1f} ms | {r['ratio_to_budget']:.4f} |")
    lines.append("")
    (args.out / "policy_speed.md").write_text("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
