"""Known events as scheduled pre-warm jobs (APScheduler).

`EventScheduler.schedule(event)` registers the event with the planner (so every `floor()` from one
cold start before the event until its end holds at least `event.replicas`) and, in a live
controller, adds an APScheduler date job at `start - cold start` that calls `on_prewarm(event)` (for
example the controller's "pre-warm now" action) and one at `end` that drops the event. The
simulator needs no jobs: its virtual clock reaches the planner through `floor()`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger

from forecasting.planner import KnownEvent, PrewarmPlanner


class EventScheduler:
    """Turns known events into planner floors and APScheduler jobs on `scheduler`."""

    def __init__(
        self,
        planner: PrewarmPlanner,
        scheduler: BaseScheduler,
        cold_start_s: Callable[[str], float],
        on_prewarm: Callable[[KnownEvent], None] | None = None,
    ) -> None:
        self.planner = planner
        self.scheduler = scheduler
        self.cold_start_s = cold_start_s
        self.on_prewarm = on_prewarm

    def schedule(self, event: KnownEvent) -> list[str]:
        """Register `event`; returns the ids of the jobs added (none for parts already in the past)."""
        self.planner.add_event(event)
        now = datetime.now(timezone.utc).timestamp()
        jobs = []
        prewarm_at = event.start - self.cold_start_s(event.model)
        if self.on_prewarm is not None and prewarm_at > now:
            job = self.scheduler.add_job(
                self.on_prewarm, DateTrigger(run_date=_utc(prewarm_at)), args=[event],
                id=f"prewarm:{event.model}:{event.start:.0f}", replace_existing=True,
            )
            jobs.append(job.id)
        if event.end > now:
            job = self.scheduler.add_job(
                self.planner.forget_past_events, DateTrigger(run_date=_utc(event.end)), args=[event.end],
                id=f"prewarm-end:{event.model}:{event.end:.0f}", replace_existing=True,
            )
            jobs.append(job.id)
        return jobs


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
