"""Run policies on a trace: the shared layer under `warmscale simulate` and bench/policies.py."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from autoscaler.sim.oracle import OraclePolicy, optimal_plan
from autoscaler.sim.profile import EngineProfile
from autoscaler.sim.results import PRIMARY_SLO, SimResult
from autoscaler.sim.simulator import SimConfig, simulate
from autoscaler.sim.traces import Workload, load_workload

__all__ = ["ALL_POLICIES", "verdict", "BOUND_NAMES", "parse_span", "parse_slice", "tune_oracle", "OracleChoice", "make_sim_policy",
           "run_policies", "TARGET_ATTAINMENT"]

TARGET_ATTAINMENT = 0.99
BOUND_NAMES = ("oracle",)   # clairvoyant runs: reported beside the policies, never ranked with them


def ALL_POLICIES() -> list[str]:  # noqa: N802
    from autoscaler.policy.registry import POLICY_NAMES

    return [*POLICY_NAMES, "oracle"]


_SPAN = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_span(text: str) -> float:
    """'7d', '7d12h', '90m', '3600', '3600s' -> seconds."""
    m = _SPAN.match(text)
    if not text.strip() or not m or not any(m.groups()):
        raise ValueError(f"cannot read {text!r} as a time: use seconds or d/h/m units, e.g. 7d12h")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def parse_slice(text: str | None) -> tuple[float | None, float | None]:
    """'START:END' (either may be empty), e.g. '7d:10d' = ServeGen days 8-10."""
    if not text:
        return None, None
    if ":" not in text:
        raise ValueError(f"slice {text!r}: expected START:END, e.g. 7d:10d")
    a, b = text.split(":", 1)
    return (parse_span(a) if a.strip() else None), (parse_span(b) if b.strip() else None)


@dataclass(frozen=True)
class OracleChoice:
    headroom: float          # the replayed plan's needs are sized at this share of the sustainable rate
    attainment: float        # what the replay reached
    tried: int
    bound_gpu_hours: float   # the exact optimum (headroom 1): the bound reported beside the policies


HEADROOMS = (1.0, 0.9, 0.8, 0.7, 0.6)


def tune_oracle(workload: Workload, profile: EngineProfile, config: SimConfig | None = None,
                max_tries: int | None = None) -> tuple[OracleChoice, SimResult]:
    """The exact optimum (`optimal_plan`) and the replay of the loosest optimal plan that meets 99 %.

    Plans are solved at headroom 1.0, 0.9, ... 0.6 of the sustainable rate (each an exact optimum
    of its own stated problem) and replayed in the simulator until one reaches 99 %; if none does
    within `max_tries`, the best-attaining replay is kept (its attainment says so). The bound is
    always the headroom-1 optimum's value.
    """
    budget = None if config is None else config.gpu_budget
    bound = optimal_plan(workload, profile, gpu_budget=budget)
    best = None
    tries = HEADROOMS[:max_tries] if max_tries else HEADROOMS
    for tried, h in enumerate(tries, 1):
        plan = bound if h == 1.0 else optimal_plan(workload, profile, headroom=h, gpu_budget=budget)
        res = simulate(workload, OraclePolicy(workload, profile, plan=plan), profile, config)
        res.notes.append(plan.describe())
        res.bound_gpu_hours = bound.gpu_hours
        choice = OracleChoice(h, res.attainment, tried, bound.gpu_hours)
        if best is None or res.attainment > best[1].attainment:
            best = (choice, res)
        if res.attainment >= TARGET_ATTAINMENT:
            return choice, res
    return best


def verdict(results: list[SimResult], target: float = TARGET_ATTAINMENT) -> dict:
    """What the runs show about warmscale, and what the trace allows when nothing reaches `target`.

    Returns {"text", "reached": [policies at or above target], "best": (policy, attainment)}."""
    runs = [r for r in results if r.policy not in BOUND_NAMES]
    if not runs:
        return {"text": "no policy run", "reached": [], "best": None}
    best = max(runs, key=lambda r: r.attainment)
    reached = [r for r in runs if r.attainment >= target]
    pct = f"{target * 100:g} %"
    if not reached:
        text = (f"no run reaches {pct} on this trace: the best is {best.policy} at {best.attainment * 100:.2f} % "
                f"({_misses(best):,} of {best.requests - best.unattainable:,} attainable requests miss "
                f"{PRIMARY_SLO.key}); with this profile and cold start the trace allows no more than that here, so "
                f"GPU-hours are not compared at {pct}")
        return {"text": text, "reached": [], "best": (best.policy, best.attainment)}
    cheapest = min(reached, key=lambda r: r.gpu_hours)
    text = (f"{len(reached)} of {len(runs)} runs reach {pct}; the fewest GPU-hours among them: {cheapest.policy} "
            f"({cheapest.gpu_hours:.2f} GPU-h)")
    return {"text": text, "reached": [r.policy for r in reached], "best": (best.policy, best.attainment)}


def _misses(r: SimResult) -> int:
    return r.slo_misses.get(PRIMARY_SLO.key, r.requests - r.unattainable - round(r.attainment * (r.requests - r.unattainable)))


def make_sim_policy(name: str, profile: EngineProfile, workload: Workload, static_replicas: int | None = None,
                    oracle: OracleChoice | None = None, **overrides):
    """A policy object for the simulator: a registry policy, 'oracle', or 'static' sized to the peak."""
    if name == "oracle":
        return OraclePolicy(workload, profile, headroom=oracle.headroom if oracle else 0.8)
    from autoscaler.policy.registry import make_policy

    cap = profile.to_capacity()
    if name == "static" and "replicas" not in overrides:
        if static_replicas is None:
            static_replicas = optimal_plan(workload, profile, headroom=oracle.headroom if oracle else 0.8).peak
        overrides["replicas"] = max(1, int(static_replicas))
    return make_policy(name, cap, **overrides)


def run_policies(trace: str, policies: list[str], profile: EngineProfile, *, start_s: float | None = None,
                 end_s: float | None = None, scale: float | None = None, peak_replicas: float = 10.0,
                 cv: float = 1.5, seed: int = 0, config: SimConfig | None = None, prewarm=None,
                 on_start=None, progress=None, workload: Workload | None = None,
                 budget_x_oracle_peak: float | None = None, settings: dict[str, dict] | None = None,
                 static_replicas: int | None = None) -> tuple[Workload, list[SimResult]]:
    """Load `trace`, run each policy; 'oracle' and 'static' use the tuned oracle (static = its peak).

    `budget_x_oracle_peak`: when the oracle runs, give the other policies a GPU budget of this many
    times its peak (a cluster with room to spare, not an unlimited one: a policy that scales on the
    wrong signal then stops at the budget rather than at max_replicas).
    """
    w = workload or load_workload(trace, factor=scale, profile=profile, peak_replicas=peak_replicas,
                                  start_s=start_s, end_s=end_s, cv=cv, seed=seed)
    results: list[SimResult] = []
    choice = None
    oracle_res = None
    if "oracle" in policies or "static" in policies:
        if on_start:
            on_start("oracle (tuning)", w)
        choice, oracle_res = tune_oracle(w, profile, config)
        oracle_res.notes.append(f"oracle: the exact optimum's plan at {choice.headroom:.0%} of the sustainable rate, "
                                f"replayed (loosest of {choice.tried} tried that meets {PRIMARY_SLO.key} at 99 %); "
                                f"bound (headroom 100 %): {choice.bound_gpu_hours:.2f} GPU-h")
        if budget_x_oracle_peak is not None:
            budget = math.ceil(budget_x_oracle_peak * oracle_res.peak_replicas * profile.gpus_per_replica)
            config = replace(config or SimConfig(), gpu_budget=budget)
            w.notes.append(f"GPU budget {budget} = {budget_x_oracle_peak:g} x the oracle's peak")
    for name in policies:
        if name == "oracle":
            results.append(oracle_res)
            continue
        if on_start:
            on_start(name, w)
        pol = make_sim_policy(name, profile, w, oracle=choice, static_replicas=static_replicas,
                              **(settings or {}).get(name, {}))
        pw = prewarm if name == "warmscale" else None
        results.append(simulate(w, pol, profile, config, prewarm=pw, progress=progress))
    return w, results
