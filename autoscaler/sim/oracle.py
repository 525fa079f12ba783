"""The clairvoyant bound: the exact optimum of a stated provisioning problem, and a policy that replays it.

**Problem** (`optimal_plan`). Split the simulated span into control steps of `step_s` (10 s). Step
t *needs* `need_t = ceil(L_t / (headroom * sustainable_rate(P_t, O_t)))` Ready replicas, where L_t
is the step's arrivals / `step_s`, P_t and O_t its mean prompt and output lengths, and `sustainable_rate`
is the one capacity model's (`ReplicaCapacity.sustainable_rate`: full load at the reference TPOT);
`headroom` is 1 for the bound. Choose the Ready count n_t of every step, knowing all future
demand, to minimise GPU-seconds

    sum_t n_t * d_t  +  cold_start_s * (replicas started)

(d_t the step's length, the last one cut at the span's end) subject to n_t >= need_t and
n_t <= the GPU budget; a replica started holds its GPU for `cold_start_s` before it is Ready, so
no replica can be added before `ceil(cold_start_s / step_s)` steps have passed; a replica can be
released at once (no drain); the fleet at the span's start is free and of any size (the
simulator starts every run Ready too).

A dynamic programme over (step, Ready count) solves it exactly:

    V_0(n) = n * d_0                                   for n >= need_0
    V_t(n) = n * d_t + min_m [V_{t-1}(m) + cold_start_s * max(0, n - m)]    for n >= need_t

(with only m >= n allowed while t < the cold-start lead). Its value is the fewest GPU-hours with
which any fleet keeps Ready capacity >= need at every step: a lower bound for every policy whose
replicas never run above their sustainable rate. It is *not* a bound on what meets the SLO (bursts
inside a step queue even at the optimum, and Ready capacity below the need is not forbidden to a
real policy), so the report shows the SLO the plan reaches when `OraclePolicy` replays it in the
simulator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.contract import Decision, Observation, Reason

__all__ = ["OraclePolicy", "OptimalPlan", "optimal_plan", "need_per_step", "first_minute_need", "as_capacity",
           "STEP_S"]

STEP_S = 10.0


def as_capacity(capacity_or_profile):
    """A ReplicaCapacity from either itself or an EngineProfile (which derives it)."""
    to_cap = getattr(capacity_or_profile, "to_capacity", None)
    return to_cap() if callable(to_cap) else capacity_or_profile


def need_per_step(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, start_s: float, end_s: float,
                  capacity, step_s: float = STEP_S) -> np.ndarray:
    """Replica-equivalents each `step_s` step needs at the sustainable rate (not rounded)."""
    capacity = as_capacity(capacity)
    n = max(1, int(math.ceil((end_s - start_s) / step_s - 1e-9)))
    arrival = np.asarray(arrival)
    inside = (arrival >= start_s) & (arrival < end_s)   # a span cut from a longer workload counts its own only
    idx = np.clip(((arrival[inside] - start_s) // step_s).astype(np.int64), 0, n - 1)
    count = np.bincount(idx, minlength=n).astype(np.float64)
    ptok = np.bincount(idx, weights=np.asarray(prompt)[inside], minlength=n)
    gtok = np.bincount(idx, weights=np.asarray(output)[inside], minlength=n)
    need = np.zeros(n)
    for i in np.nonzero(count)[0].tolist():
        c = count[i]   # a last, shorter step is read at the same rate as a full one (a few requests in
        need[i] = (c / step_s) / capacity.sustainable_rate(ptok[i] / c, gtok[i] / c)   # a sliver are no burst)
    return need


def first_minute_need(workload, capacity, utilization: float = 0.8) -> int:
    """Replicas for the busiest 10 s of the first minute at `utilization`: the fleet every run starts with."""
    need = need_per_step(workload.arrival, workload.prompt, workload.output, workload.start_s,
                         min(workload.end_s, workload.start_s + 60.0), capacity)
    peak = float(need.max()) if need.size else 0.0
    return int(math.ceil(peak / utilization - 1e-9)) if peak > 0 else 1


@dataclass(frozen=True)
class OptimalPlan:
    step_s: float
    start_s: float
    need: np.ndarray        # Ready replicas each step needs (int, capped at the budget)
    ready: np.ndarray       # the optimum's Ready count per step (int)
    gpu_hours: float        # the optimum's value: the bound
    starts: int             # replicas started
    cold_start_s: float
    headroom: float = 1.0
    capped_steps: int = 0   # steps whose need exceeded the GPU budget (the plan holds the budget there)

    @property
    def peak(self) -> int:
        return int(self.ready.max()) if self.ready.size else 0

    def describe(self) -> str:
        cap = f", {self.capped_steps} steps need more than the budget allows (held at it)" if self.capped_steps else ""
        head = "" if self.headroom == 1.0 else f" at {self.headroom:.0%} of the sustainable rate"
        return (f"exact optimum (DP over {self.ready.size:,} steps of {self.step_s:g} s{head}, cold start "
                f"{self.cold_start_s:g} s): {self.gpu_hours:.2f} GPU-h, peak {self.peak}, {self.starts} starts{cap}")


def solve(need: np.ndarray, durations: np.ndarray, cold_start_s: float, step_s: float) -> tuple[np.ndarray, float]:
    """The DP of the module docstring on integer needs: (Ready count per step, GPU-seconds)."""
    need = np.asarray(need, dtype=np.int64)
    T = need.size
    if T == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    states = np.arange(int(need.max()) + 1)
    lead = int(math.ceil(cold_start_s / step_s - 1e-9))
    rise = np.maximum(0, states[None, :] - states[:, None]).astype(np.float64)   # [from m, to n]
    ramp = cold_start_s * rise
    no_rise = np.where(rise > 0, np.inf, 0.0)
    value = np.where(states >= need[0], states * durations[0], np.inf)
    choice = np.zeros((T, states.size), dtype=np.int32)
    for t in range(1, T):
        trans = value[:, None] + (no_rise if t < lead else ramp)
        best = trans.argmin(axis=0)
        value = trans[best, states] + states * durations[t]
        value[states < need[t]] = np.inf
        choice[t] = best
    n = int(np.argmin(value))
    total = float(value[n])
    ready = np.zeros(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        ready[t] = n
        n = int(choice[t, n])
    return ready, total


def optimal_plan(workload, capacity, *, headroom: float = 1.0, gpu_budget: int | None = None,
                 gpus_per_replica: int = 1, step_s: float = STEP_S) -> OptimalPlan:
    """Solve the stated problem exactly for `workload` with `capacity` (a ReplicaCapacity or an EngineProfile)."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom: expected 0 < headroom <= 1, got {headroom!r}")
    gpr = getattr(capacity, "gpus_per_replica", gpus_per_replica)
    cap = as_capacity(capacity)
    raw = need_per_step(workload.arrival, workload.prompt, workload.output, workload.start_s, workload.end_s,
                        cap, step_s)
    need = np.ceil(raw / headroom - 1e-9).astype(np.int64)
    capped = 0
    if gpu_budget is not None:
        top = max(0, int(gpu_budget) // gpr)
        capped = int((need > top).sum())
        need = np.minimum(need, top)
    n = need.size
    durations = np.minimum(step_s, workload.end_s - (workload.start_s + step_s * np.arange(n)))
    ready, total = solve(need, durations, float(cap.cold_start_s), step_s)
    starts = int(np.maximum(0, np.diff(ready)).sum()) if ready.size > 1 else 0
    return OptimalPlan(step_s, float(workload.start_s), need, ready, total * gpr / 3600.0, starts,
                       float(cap.cold_start_s), headroom, capped)


class OraclePolicy:
    """Replays an `OptimalPlan` in the simulator (it reads the future: the simulator only).

    At each tick it asks for the largest planned count over the steps that begin before the next
    tick's orders could be Ready (one cold start plus one tick ahead), so replicas are Ready when
    their step begins and go when no step within reach needs them."""

    name = "oracle"

    def __init__(self, workload, capacity, plan: OptimalPlan | None = None, headroom: float = 1.0,
                 interval_s: float = STEP_S, gpu_budget: int | None = None):
        self.interval_s = interval_s
        self.plan = plan or optimal_plan(workload, capacity, headroom=headroom, gpu_budget=gpu_budget)
        self.lead_s = self.plan.cold_start_s + interval_s

    def peak(self) -> int:
        return self.plan.peak

    @property
    def initial_replicas(self) -> int:
        """The fleet the replay starts with: what its first decision asks for (the plan's start is free)."""
        p = self.plan
        hi = min(p.ready.size, int(self.lead_s // p.step_s) + 1)
        return max(1, int(p.ready[:hi].max())) if p.ready.size else 1

    def decide(self, obs: Observation) -> Decision:
        p = self.plan
        lo = int((obs.time - p.start_s) // p.step_s)
        hi = int((obs.time + self.lead_s - p.start_s) // p.step_s)
        lo, hi = max(lo, 0), min(hi, p.ready.size - 1)
        desired = int(p.ready[lo:hi + 1].max()) if hi >= lo else 0
        current = obs.ready_replicas + obs.loading_replicas
        reason = (Reason.SCALE_UP_FORECAST if desired > current else
                  Reason.SCALE_DOWN_STABLE if desired < current else Reason.HOLD_STEADY)
        return Decision(model=obs.model, time=obs.time, current=current, desired=desired, reason=reason,
                        signal="forecast", detail=f"optimal plan: max over next {self.lead_s:.0f} s = {desired}")
