"""The pre-warm planner: demand forecast at now + cold start -> replica floor for the policy.

A replica ordered now serves only after its cold start, so the floor that matters now is the one
that covers demand one cold start ahead. The planner turns the forecast quantile (P90 by default)
at `now + cold_start_s` into replicas:

    replicas = ceil(max(rate / (per_replica x utilisation) for each modelled rate)),

clamped to `[min_replicas, max_replicas]`, where the rates are requests/s and, when both the
forecast and the configuration give them, prompt and generated tokens/s. Known events (a launch,
a batch job) add their own floor from `start - cold_start_s` until `end`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forecasting.types import DemandForecast, ReplicaFloor


class PlannerConfig(BaseModel):
    """How forecast rates become replicas (validated; errors name the field and the value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_replica: float = Field(gt=0, description="requests/s one replica sustains at full utilisation")
    prompt_tokens_per_replica: float | None = Field(None, gt=0, description="prompt tokens/s one replica sustains")
    generation_tokens_per_replica: float | None = Field(None, gt=0, description="generated tokens/s one replica sustains")
    target_utilisation: float = Field(0.8, gt=0, le=1, description="share of a replica's capacity to plan for")
    quantile: Literal["p50", "p90"] = "p90"
    min_replicas: int = Field(0, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    hold_s: float = Field(600.0, gt=0, description="how long a floor stays valid after it is made")

    @classmethod
    def from_capacity(cls, capacity, prompt_tokens: float, output_tokens: float, **fields) -> PlannerConfig:
        """Per-replica rates from warmscale's one capacity model (`ReplicaCapacity`, duck-typed so
        that forecasting stays free of the policy package): requests/s at the mean request's
        sustainable rate, prompt and generated tokens/s at the replica's prefill and decode speed."""
        return cls(requests_per_replica=capacity.sustainable_rate(prompt_tokens, output_tokens),
                   prompt_tokens_per_replica=capacity.prefill_tokens_per_s,
                   generation_tokens_per_replica=capacity.decode_tokens_per_s, **fields)

    @model_validator(mode="after")
    def _bounds(self) -> PlannerConfig:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class KnownEvent(BaseModel):
    """Demand known in advance: hold at least `replicas` for `model` during `[start, end)` (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    start: float
    end: float
    replicas: int = Field(ge=1)
    reason: str = "scheduled event"

    @model_validator(mode="after")
    def _ordered(self) -> KnownEvent:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


@dataclass(frozen=True)
class ReplicaNeed:
    """Replicas needed for a forecast, and which rate bound it."""

    replicas: int
    binding_rate: str
    detail: str


class PrewarmPlanner:
    """Turns forecasts and known events into replica floors."""

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config
        self._events: list[KnownEvent] = []

    def replicas_for(self, forecast: DemandForecast) -> ReplicaNeed:
        """Replicas that serve the forecast quantile at the target utilisation."""
        cfg = self.config
        request_rate = forecast.request_rate_p90 if cfg.quantile == "p90" else forecast.request_rate_p50
        if not math.isfinite(request_rate) or request_rate < 0:
            raise ValueError(f"forecast request rate must be a finite rate >= 0, got {request_rate!r}")
        candidates = [("requests", request_rate, cfg.requests_per_replica, "req/s")]
        if cfg.quantile == "p90":
            if forecast.prompt_tokens_p90 is not None and cfg.prompt_tokens_per_replica is not None:
                candidates.append(("prompt_tokens", forecast.prompt_tokens_p90, cfg.prompt_tokens_per_replica, "tok/s"))
            if forecast.generation_tokens_p90 is not None and cfg.generation_tokens_per_replica is not None:
                candidates.append(("generation_tokens", forecast.generation_tokens_p90, cfg.generation_tokens_per_replica, "tok/s"))
        best = None
        for name, rate, per_replica, unit in candidates:
            exact = rate / (per_replica * cfg.target_utilisation)
            # Guard against 3.0000000001 becoming 4 through float noise.
            needed = math.ceil(round(exact, 9))
            if best is None or needed > best[0]:
                best = (needed, name, f"{cfg.quantile} {rate:.3g} {unit} / ({per_replica:.3g} x {cfg.target_utilisation:.2f})")
        assert best is not None
        replicas = max(best[0], cfg.min_replicas)
        if cfg.max_replicas is not None:
            replicas = min(replicas, cfg.max_replicas)
        return ReplicaNeed(replicas, best[1], best[2])

    def floor(self, model: str, forecast: DemandForecast | None, now: float, cold_start_s: float) -> ReplicaFloor | None:
        """The floor for `model` from its forecast (made for `now + cold_start_s`) and from its known events."""
        if cold_start_s < 0 or not math.isfinite(cold_start_s):
            raise ValueError(f"cold_start_s must be a finite number >= 0, got {cold_start_s!r}")
        floors: list[ReplicaFloor] = []
        if forecast is not None:
            if forecast.model != model:
                raise ValueError(f"forecast is for model {forecast.model!r}, not {model!r}")
            need = self.replicas_for(forecast)
            lead = forecast.target_time - now
            reason = (
                f"forecast_floor: {need.detail} -> {need.replicas} replicas for t+{lead:.0f}s"
                f" (cold start {cold_start_s:.0f}s, {forecast.method or 'forecast'})"
            )
            floors.append(ReplicaFloor(forecast.model, need.replicas, now + self.config.hold_s, reason))
        for event in self.events_for(model, now, cold_start_s):
            floors.append(ReplicaFloor(model, event.replicas, event.end, f"event_floor: {event.reason}"))
        if not floors:
            return None
        return max(floors, key=lambda f: f.replicas)

    def add_event(self, event: KnownEvent) -> None:
        """Remember a known event; it contributes a floor from one cold start before it begins."""
        self._events.append(event)

    def events_for(self, model: str, now: float, cold_start_s: float) -> list[KnownEvent]:
        """Known events of `model` whose pre-warm window contains `now`."""
        return [e for e in self._events if e.model == model and e.start - cold_start_s <= now < e.end]

    def forget_past_events(self, now: float) -> None:
        """Drop events that have ended."""
        self._events = [e for e in self._events if e.end > now]
