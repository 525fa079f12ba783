"""Scheduled overrides: is a cron window open at `now`? Evaluated with apscheduler's CronTrigger
on the caller's clock (never a clock read here), so tests and the simulator can inject time."""
from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from autoscaler.overrides.model import Schedule, utc

__all__ = ["cron_trigger", "open_window", "next_window_start"]

_MAX_STEPS = 10_000   # fire times walked inside one window (every minute for a week)


@lru_cache(maxsize=1024)
def cron_trigger(cron: str, time_zone: str) -> CronTrigger:
    """The trigger for a cron expression; ValueError naming the part that is wrong."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {time_zone!r} is not an IANA time zone (e.g. UTC, Europe/Paris)") from None
    try:
        return CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as err:
        raise ValueError(f"cron expression {cron!r} is invalid: {err}") from None


def open_window(schedule: Schedule, now: datetime) -> tuple[datetime, datetime] | None:
    """(start, end) of the window open at `now`, or None. Overlapping windows merge: end is the
    latest fire time at or before `now` plus the duration."""
    now = utc(now)
    trigger = cron_trigger(schedule.cron, schedule.time_zone)
    span = timedelta(seconds=schedule.duration_s)
    first = trigger.get_next_fire_time(None, now - span + timedelta(microseconds=1))
    if first is None or utc(first) > now:
        return None
    last = first
    for _ in range(_MAX_STEPS):
        nxt = trigger.get_next_fire_time(last, last + timedelta(seconds=1))
        if nxt is None or utc(nxt) > now:
            break
        last = nxt
    return utc(first), utc(last) + span


def next_window_start(schedule: Schedule, after: datetime) -> datetime | None:
    fire = cron_trigger(schedule.cron, schedule.time_zone).get_next_fire_time(None, utc(after))
    return None if fire is None else utc(fire)
