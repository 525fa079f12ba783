"""The clairvoyant oracle: a lower bound on GPU-hours that no online policy can reach.

It knows every future arrival. For each minute it computes the replicas that minute's demand
needs (`plan`), and at every tick asks for the largest plan over the minutes from now until one
cold start (plus one tick) ahead, so replicas ordered now are Ready when their minute begins and
released as soon as no minute within reach needs them. It is a Policy for the simulator only (it
reads the future): the same simulator, cold starts, drains and GPU budget apply to it.

Sizing: a minute needs `ceil(L / (utilization * profile.sustainable_rate(P, O)))` replicas for
the request rate L, mean prompt P and mean output O of its busiest 10-second window, at least
one while there is any demand. `utilization` below 1 is the headroom that lets queues absorb sub-minute bursts; the
default is the highest that still meets the 2 s / 100 ms SLO on the development traces (see
bench/policies.py), so the oracle is tight rather than generous.
"""
from __future__ import annotations

import math

import numpy as np

from autoscaler.policy.types import Decision, Observation, Reason

__all__ = ["OraclePolicy", "oracle_plan"]

DEFAULT_UTILIZATION = 0.8


def need_per_bin(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, start_s: float, end_s: float,
                 profile, bin_s: float = 60.0, burst_s: float = 10.0) -> np.ndarray:
    """Replica-equivalents of work each `bin_s` bin needs, at full sustainable rate (utilization 1).

    A bin's need is that of its busiest `burst_s` window: request rate / the profile's sustainable
    rate for that window's mean prompt and output lengths. (Sizing to the minute's mean would
    starve the bursts inside it: the Azure code trace runs at 3x its minute mean for 10-20 s.)
    """
    n_bins = max(1, int(math.ceil((end_s - start_s) / bin_s)))
    per = max(1, int(round(bin_s / burst_s)))
    n_win = n_bins * per
    idx = np.clip(((arrival - start_s) // burst_s).astype(np.int64), 0, n_win - 1)
    count = np.bincount(idx, minlength=n_win).astype(np.float64)
    ptok = np.bincount(idx, weights=prompt, minlength=n_win)
    gtok = np.bincount(idx, weights=output, minlength=n_win)
    need = np.zeros(n_win)
    for i in np.nonzero(count)[0].tolist():
        c = count[i]
        need[i] = (c / burst_s) / profile.sustainable_rate(ptok[i] / c, gtok[i] / c)
    return need.reshape(n_bins, per).max(axis=1)


def oracle_plan(workload, profile, utilization: float = DEFAULT_UTILIZATION, bin_s: float = 60.0,
                burst_s: float = 10.0) -> np.ndarray:
    """Replicas each `bin_s` bin of `workload` needs (index 0 = the bin starting at workload.start_s)."""
    need = need_per_bin(workload.arrival, workload.prompt, workload.output, workload.start_s, workload.end_s,
                        profile, bin_s, burst_s)
    plan = np.where(need > 0, np.maximum(1, np.ceil(need / utilization - 1e-9)), 0)
    return plan.astype(np.int64)


class OraclePolicy:
    name = "oracle"

    def __init__(self, workload, profile, utilization: float = DEFAULT_UTILIZATION, interval_s: float = 10.0,
                 bin_s: float = 60.0, burst_s: float = 10.0):
        self.interval_s = interval_s
        self.bin_s = bin_s
        self.start_s = workload.start_s
        self.plan = oracle_plan(workload, profile, utilization, bin_s, burst_s)
        self.utilization = utilization
        self.lead_s = profile.cold_start.total_s + interval_s
        self.model = workload.model

    def peak(self) -> int:
        return int(self.plan.max()) if self.plan.size else 0

    def decide(self, obs: Observation) -> Decision:
        lo = int((obs.time - self.start_s) // self.bin_s)
        hi = int((obs.time + self.lead_s - self.start_s) // self.bin_s)
        lo, hi = max(lo, 0), min(hi, self.plan.size - 1)
        desired = int(self.plan[lo:hi + 1].max()) if hi >= lo else 0
        current = obs.ready_replicas + obs.loading_replicas
        reason = (Reason.SCALE_UP_FORECAST if desired > current else
                  Reason.SCALE_DOWN_STABLE if desired < current else Reason.HOLD_STEADY)
        return Decision(model=obs.model, time=obs.time, current=current, desired=desired, reason=reason,
                        signal="forecast", detail=f"oracle: max need over next {self.lead_s:.0f} s = {desired}")
