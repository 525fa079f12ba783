"""Types shared between forecasting and its consumers (the policy, the simulator, the controller)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DemandForecast:
    """Predicted demand for one model at `target_time` (seconds), made at `made_at`.

    Rates are per second. `p50`/`p90` are quantiles of the request rate; token rates are the
    P90 of prompt and generated tokens per second, or None where the forecaster does not model them.
    """

    model: str
    made_at: float
    target_time: float
    request_rate_p50: float
    request_rate_p90: float
    prompt_tokens_p90: float | None = None
    generation_tokens_p90: float | None = None
    method: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaFloor:
    """A lower bound on replicas that the pre-warm planner asks the policy to respect until `expires_at`."""

    model: str
    replicas: int
    expires_at: float
    reason: str
