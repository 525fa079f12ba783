"""The API's request and response bodies (pydantic): what /openapi.json documents."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.contract import Decision, DemandForecast, OverrideKind
from autoscaler.overrides.model import DNS_LABEL, DURATION, AuditEntry, ScalingOverride, format_duration

__all__ = ["ErrorBody", "ScheduleIn", "OverrideCreate", "OverrideOut", "OverrideCreated", "OverrideList",
           "AutoscalerOut", "AutoscalerList", "DecisionOut", "DecisionList", "ForecastOut", "ForecastResponse",
           "AuditList"]


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="invalid_field, unauthenticated, forbidden, not_found, conflict, unavailable")
    message: str
    field: str | None = Field(None, description="the request field that is wrong, when one is")
    value: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(min_length=1, max_length=100, examples=["0 9 * * 1-5"],
                      description="five fields: minute hour day-of-month month day-of-week")
    time_zone: str = Field("UTC", min_length=1, max_length=64, examples=["Europe/Paris"])
    duration: str = Field(pattern=DURATION, max_length=32, examples=["8h"], description="how long each window lasts")


class OverrideCreate(BaseModel):
    """A new override. Give exactly one of `duration` (from now) and `expires_at`."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=DNS_LABEL, max_length=63, description="generated when absent")
    target: str = Field(pattern=DNS_LABEL, max_length=63, description="ModelAutoscaler name, same namespace")
    kind: OverrideKind
    replicas: int | None = Field(None, ge=0, le=100_000, description="pin and prewarm")
    min_replicas: int | None = Field(None, ge=0, le=100_000, description="bounds")
    max_replicas: int | None = Field(None, ge=0, le=100_000, description="bounds")
    duration: str | None = Field(None, pattern=DURATION, max_length=32, examples=["2h"])
    expires_at: datetime | None = Field(None, description="RFC 3339; without an offset it is read as UTC")
    reason: str = Field(min_length=1, max_length=1024)
    schedule: ScheduleIn | None = None


class ScheduleOut(BaseModel):
    cron: str
    time_zone: str
    duration: str


class OverrideOut(BaseModel):
    namespace: str
    name: str
    target: str
    kind: OverrideKind
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    expires_at: datetime
    reason: str
    author: str
    schedule: ScheduleOut | None = None
    created_at: datetime
    uid: str
    active: bool = Field(description="in force now (not expired; inside a window if scheduled)")
    active_until: datetime | None = None

    @classmethod
    def of(cls, ov: ScalingOverride, active_until: datetime | None) -> "OverrideOut":
        data = ov.model_dump(exclude={"schedule"})
        schedule = None
        if ov.schedule is not None:
            schedule = ScheduleOut(cron=ov.schedule.cron, time_zone=ov.schedule.time_zone,
                                   duration=format_duration(ov.schedule.duration_s))
        return cls(**data, schedule=schedule, active=active_until is not None, active_until=active_until)


class OverrideCreated(BaseModel):
    override: OverrideOut
    warnings: list[str] = Field(default_factory=list, description="which override wins where this one clashes")
    replayed: bool = Field(False, description="an earlier request with the same Idempotency-Key made it")


class OverrideList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    items: list[OverrideOut]
    continue_: str | None = Field(None, alias="continue", description="pass as ?continue= for the next page")


class AutoscalerOut(BaseModel):
    namespace: str
    name: str
    model: str
    current: int
    desired: int
    ready: int
    loading: int
    min_replicas: int
    max_replicas: int
    policy: str
    active_override: str | None
    updated_at: float


class AutoscalerList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    items: list[AutoscalerOut]
    continue_: str | None = Field(None, alias="continue")


class DecisionOut(BaseModel):
    model: str
    time: float
    current: int
    desired: int
    reason: str
    signal: str
    detail: str
    explain: dict[str, Any] | None

    @classmethod
    def of(cls, d: Decision) -> "DecisionOut":
        return cls(model=d.model, time=d.time, current=d.current, desired=d.desired, reason=str(d.reason),
                   signal=str(d.signal), detail=d.detail, explain=d.explain.to_dict() if d.explain else None)


class DecisionList(BaseModel):
    items: list[DecisionOut]


class ForecastOut(BaseModel):
    model: str
    made_at: float
    target_time: float
    request_rate_p50: float
    request_rate_p90: float
    prompt_tokens_p90: float | None
    generation_tokens_p90: float | None
    method: str

    @classmethod
    def of(cls, f: DemandForecast) -> "ForecastOut":
        return cls(model=f.model, made_at=f.made_at, target_time=f.target_time, request_rate_p50=f.request_rate_p50,
                   request_rate_p90=f.request_rate_p90, prompt_tokens_p90=f.prompt_tokens_p90,
                   generation_tokens_p90=f.generation_tokens_p90, method=f.method)


class ForecastResponse(BaseModel):
    forecast: ForecastOut | None = Field(description="null until the forecaster has made one")


class AuditList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    items: list[AuditEntry]
    continue_: str | None = Field(None, alias="continue")
