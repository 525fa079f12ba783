"""Which overrides are in force at `now`, as the policy's overrides stage wants them."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from autoscaler.contract import OverrideSpec
from autoscaler.overrides.model import ScalingOverride, utc
from autoscaler.overrides.schedule import open_window

__all__ = ["active_until", "to_spec", "active_specs"]

log = logging.getLogger(__name__)


def active_until(override: ScalingOverride, now: datetime) -> datetime | None:
    """When the override stops being in force, or None if it is not in force at `now`.
    Expired ones are never in force; a scheduled one only inside a window (cut at its expiry)."""
    now = utc(now)
    if override.expires_at <= now:
        return None
    if override.schedule is None:
        return override.expires_at
    window = open_window(override.schedule, now)
    return None if window is None else min(window[1], override.expires_at)


def to_spec(override: ScalingOverride, until: datetime) -> OverrideSpec:
    return OverrideSpec(name=override.name, kind=override.kind, expires_at=until.timestamp(),
                        reason=override.reason, author=override.author, replicas=override.replicas,
                        min_replicas=override.min_replicas, max_replicas=override.max_replicas,
                        created_at=override.created_at.timestamp())


def active_specs(overrides: Iterable[ScalingOverride], now: datetime | float) -> list[OverrideSpec]:
    """The overrides in force at `now`. One that cannot be evaluated (a cron written with kubectl
    that apscheduler rejects) is logged and left out, never fatal to the caller's tick."""
    now = utc(now)
    specs = []
    for override in overrides:
        try:
            until = active_until(override, now)
        except ValueError as err:
            log.warning("override %s/%s ignored: %s", override.namespace, override.name, err)
            continue
        if until is not None:
            specs.append(to_spec(override, until))
    return specs
