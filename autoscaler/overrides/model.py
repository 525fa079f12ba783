"""An operator's override as warmscale stores it (a ScalingOverride object, or a SQLite row).

One definition of the override record, shared by the stores, the API and the resolver. The
policy's overrides stage sees only `contract.OverrideSpec`; `resolve.active_specs` converts.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.contract import OverrideKind

__all__ = ["GROUP", "VERSION", "PLURAL", "KIND", "AUDIT_PLURAL", "AUDIT_KIND", "DNS_LABEL",
           "Schedule", "ScalingOverride", "AuditEntry", "parse_duration", "format_duration", "utc",
           "idempotency_digest"]

GROUP = "autoscaling.warmscale.io"
VERSION = "v1alpha1"
PLURAL = "scalingoverrides"
KIND = "ScalingOverride"
AUDIT_PLURAL = "overrideauditrecords"
AUDIT_KIND = "OverrideAuditRecord"
AUTOSCALER_PLURAL = "modelautoscalers"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DURATION = r"^([0-9]+[smhd])+$"

MAX_DURATION_S = 3650 * 86400
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as '90s', '15m', '2h', '1h30m', '7d'. Raises ValueError."""
    if not isinstance(text, str) or not re.fullmatch(DURATION, text):
        raise ValueError(f"duration {text!r} is not a number followed by s, m, h or d (e.g. 90s, 15m, 2h, 1h30m)")
    seconds = sum(int(n) * _UNIT_S[u] for n, u in re.findall(r"([0-9]+)([smhd])", text))
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION_S // 86400} days")
    return float(seconds)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def idempotency_digest(user: str, key: str) -> str:
    """A label-safe digest of (user, Idempotency-Key): the same key from two users never collides."""
    return hashlib.sha256(f"{user}\0{key}".encode()).hexdigest()[:40]


def utc(value: datetime | float) -> datetime:
    """A timezone-aware UTC datetime (naive datetimes are read as UTC, floats as epoch seconds)."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Schedule(BaseModel):
    """A recurring window: opens at each cron fire time (in `time_zone`) and lasts `duration_s`."""

    model_config = ConfigDict(frozen=True)
    cron: str = Field(description="five-field cron expression: minute hour day-of-month month day-of-week")
    time_zone: str = Field("UTC", description="IANA time zone the cron expression is read in")
    duration_s: float = Field(description="how long each window stays open, seconds")


class ScalingOverride(BaseModel):
    """One override, whatever store holds it."""

    model_config = ConfigDict(frozen=True)
    namespace: str
    name: str
    target: str = Field(description="the ModelAutoscaler this override applies to (same namespace)")
    kind: OverrideKind
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    expires_at: datetime = Field(description="the override (every window of a schedule) ends here")
    reason: str
    author: str
    schedule: Schedule | None = None
    created_at: datetime
    uid: str = ""

    def summary(self) -> dict:
        """The fields an audit entry records as the previous / new value."""
        return self.model_dump(mode="json", exclude={"uid"})


class AuditEntry(BaseModel):
    """One mutating call: who did what, when, and the value before and after."""

    id: str = ""
    time: datetime
    actor: str
    action: str = Field(description="create, delete or expire")
    namespace: str
    override: str
    target: str
    previous: dict | None = None
    current: dict | None = None
