"""Checks on a new override before it is written, each naming the field and the value."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from autoscaler.contract import OverrideKind
from autoscaler.overrides.errors import Conflict, FieldError
from autoscaler.overrides.model import ScalingOverride, utc
from autoscaler.overrides.resolve import active_until
from autoscaler.overrides.schedule import cron_trigger, next_window_start

__all__ = ["DEFAULT_MAX_TTL_S", "check_fields", "check_bounds", "check_expiry", "check_conflicts"]

DEFAULT_MAX_TTL_S = 30 * 86400
_NEEDS_REPLICAS = (OverrideKind.PIN, OverrideKind.PREWARM)


def check_fields(ov: ScalingOverride) -> None:
    """Which fields each kind needs and allows."""
    kind = OverrideKind(ov.kind)
    if kind in _NEEDS_REPLICAS and ov.replicas is None:
        raise FieldError(f"replicas is required for a {kind.value} override", "replicas", None)
    if kind not in _NEEDS_REPLICAS and ov.replicas is not None:
        raise FieldError(f"replicas is only for pin and prewarm, not {kind.value}", "replicas", ov.replicas)
    if kind is OverrideKind.BOUNDS:
        if ov.min_replicas is None and ov.max_replicas is None:
            raise FieldError("a bounds override needs min_replicas, max_replicas or both", "min_replicas", None)
        if ov.min_replicas is not None and ov.max_replicas is not None and ov.min_replicas > ov.max_replicas:
            raise FieldError(f"min_replicas ({ov.min_replicas}) must be <= max_replicas ({ov.max_replicas})",
                             "min_replicas", ov.min_replicas)
    else:
        for field in ("min_replicas", "max_replicas"):
            if getattr(ov, field) is not None:
                raise FieldError(f"{field} is only for bounds, not {kind.value}", field, getattr(ov, field))
    if ov.schedule is not None:
        try:
            cron_trigger(ov.schedule.cron, "UTC")
        except ValueError as err:
            raise FieldError(str(err), "schedule.cron", ov.schedule.cron) from None
        try:
            cron_trigger(ov.schedule.cron, ov.schedule.time_zone)
        except ValueError as err:
            raise FieldError(str(err), "schedule.time_zone", ov.schedule.time_zone) from None
        if ov.schedule.duration_s <= 0:
            raise FieldError("schedule.duration must be longer than 0 s", "schedule.duration", ov.schedule.duration_s)


def check_bounds(ov: ScalingOverride, lo: int, hi: int) -> None:
    """Counts must lie within the ModelAutoscaler's own [minReplicas, maxReplicas]."""
    for field in ("replicas", "min_replicas", "max_replicas"):
        value = getattr(ov, field)
        if value is not None and not lo <= value <= hi:
            raise FieldError(f"{field} {value} is outside the bounds of autoscaler {ov.target!r} "
                             f"[{lo}, {hi}]; change the autoscaler's minReplicas/maxReplicas to go beyond them",
                             field, value)


def check_expiry(ov: ScalingOverride, now: datetime, max_ttl_s: float = DEFAULT_MAX_TTL_S) -> None:
    now = utc(now)
    if ov.expires_at <= now:
        raise FieldError(f"expiry {ov.expires_at.isoformat()} is not in the future (now {now.isoformat()})",
                         "expires_at", ov.expires_at.isoformat())
    if ov.expires_at - now > timedelta(seconds=max_ttl_s):
        raise FieldError(f"expiry {ov.expires_at.isoformat()} is more than the maximum of {max_ttl_s / 86400:g} days "
                         f"from now", "expires_at", ov.expires_at.isoformat())
    if ov.schedule is not None:
        first = next_window_start(ov.schedule, now - timedelta(seconds=ov.schedule.duration_s))
        if first is None or first >= ov.expires_at:
            raise FieldError(f"schedule {ov.schedule.cron!r} never opens before the expiry "
                             f"{ov.expires_at.isoformat()}", "schedule.cron", ov.schedule.cron)


def check_conflicts(ov: ScalingOverride, existing: Sequence[ScalingOverride], now: datetime) -> list[str]:
    """Reject a second pin in force on one autoscaler (two pins cannot both hold); for every other
    clash, return warnings that say which override wins (the overrides stage's precedence)."""
    now = utc(now)
    live = [e for e in existing if e.target == ov.target and _in_force(e, now)]
    new_kind = OverrideKind(ov.kind)
    pins = [e for e in live if OverrideKind(e.kind) is OverrideKind.PIN]
    if new_kind is OverrideKind.PIN and pins and ov.schedule is None:
        raise Conflict(f"autoscaler {ov.target!r} is already pinned to {pins[0].replicas} by override "
                       f"{pins[0].name!r} until {pins[0].expires_at.isoformat()}; delete it first",
                       "kind", new_kind.value)
    warnings = []
    if pins and new_kind is not OverrideKind.PIN:
        warnings.append(f"pin {pins[0].name!r} is in force and wins over this {new_kind.value} override "
                        f"until {pins[0].expires_at.isoformat()}")
    if new_kind is OverrideKind.PIN:
        others = [e.name for e in live if OverrideKind(e.kind) is not OverrideKind.PIN]
        if others:
            warnings.append(f"this pin wins over the overrides in force: {', '.join(others)}")
    return warnings


def _in_force(ov: ScalingOverride, now: datetime) -> bool:
    try:
        return active_until(ov, now) is not None
    except ValueError:
        return False
