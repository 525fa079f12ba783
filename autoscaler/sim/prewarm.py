"""The simulator's forecast hook: a pre-warm planner that raises the policy's replica floor.

Any object with these two methods can be passed as `Simulation(prewarm=...)`:

    class PrewarmPlanner(Protocol):
        def observe(self, model, t, request_rate, prompt_token_rate, generation_token_rate) -> None
        def floor(self, model, now) -> ReplicaFloor | None

Every control interval of a model, the simulator calls `observe` with the rates it scraped
(the same numbers the policy sees in its Observation; skipped while they are missing), then
`floor`, and puts the answer in `Observation.floor`. If the object also has a
`forecast(model, now) -> DemandForecast | None` method, its answer goes in
`Observation.forecast`.

To run a slice of a trace (say ServeGen days 8-10) with a planner that has seen days 1-7, feed it
first with `feed_history(planner, workload, ...)`, or pre-feed it yourself: the simulator never
resets it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from forecasting.types import DemandForecast, ReplicaFloor

__all__ = ["PrewarmPlanner", "feed_history"]


@runtime_checkable
class PrewarmPlanner(Protocol):
    def observe(self, model: str, t: float, request_rate: float, prompt_token_rate: float,
                generation_token_rate: float) -> None: ...

    def floor(self, model: str, now: float) -> ReplicaFloor | None: ...


def forecast_of(planner, model: str, now: float) -> DemandForecast | None:
    fn = getattr(planner, "forecast", None)
    return fn(model, now) if callable(fn) else None


def feed_history(planner: PrewarmPlanner, workload, start_s: float = 0.0, end_s: float | None = None,
                 interval_s: float = 60.0) -> int:
    """Feed `planner` the demand of `workload`'s trace over [start_s, end_s) (default: up to the
    simulated slice), one `observe` per `interval_s`, at the workload's scale. Returns the count.

    For a rate trace the rates come from the trace itself (scaled, with the workload's mean token
    lengths); for a request trace they are counted from its (scaled) arrivals, which only exist
    inside the simulated slice.
    """
    end = workload.start_s if end_s is None else end_s
    if end <= start_s:
        return 0
    mean_p = float(np.mean(workload.prompt)) if len(workload) else 0.0
    mean_o = float(np.mean(workload.output)) if len(workload) else 0.0
    times = np.arange(start_s + interval_s, end + 1e-9, interval_s)
    if workload.rate_trace is not None:
        # mean rate over each interval, from the (interpolated) trace
        grid_rates = workload.rate_trace.rate_at(times - interval_s / 2) * workload.scale
        rates = grid_rates
    else:
        idx = np.searchsorted(workload.arrival, times)
        prev = np.searchsorted(workload.arrival, times - interval_s)
        rates = (idx - prev) / interval_s
    for t, r in zip(times.tolist(), rates.tolist()):
        planner.observe(workload.model, t, r, r * mean_p, r * mean_o)
    return int(times.size)
