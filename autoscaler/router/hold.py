"""Hold a model's requests while it has no Ready engine (scale from zero), within two bounds.

A request that finds no engine waits here until one is listed, at most `max_wait_s`; at most
`max_held` requests wait per model. When a request starts waiting, `on_hold(model)` is called (the
activator's poke: local mode's loop wakes and decides for that model at once instead of at its next
policy interval, as Knative's activator pokes its autoscaler). Past either bound the router answers 503 with
`Retry-After: retry_after_s`. Both bounds matter: the wait bounds what a client sees, the count
bounds memory (each held request keeps its body).

How the peers bound theirs (their published defaults):
- Knative activator: a breaker per revision queues up to 10,000 requests (`breakerQueueDepth`,
  knative/serving pkg/activator/net/throttler.go), then 503; the wait is the revision's request
  timeout, 300 s by default (max 600 s).
- KEDA HTTP add-on interceptor: until v0.13 a request waited for a ready replica for
  `KEDA_CONDITION_WAIT_TIMEOUT` (20 s); from v0.14 the readiness wait is bounded by the request
  timeout (`KEDA_HTTP_READINESS_TIMEOUT` 0 = no separate bound; `KEDA_HTTP_REQUEST_TIMEOUT` 0 s =
  none) and, from v1.0, the count by `KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS` (0 = unlimited),
  per interceptor replica (keda.sh/http-add-on reference: environment variables).
- Gateway API inference extension (EPP flow control): in-memory queues with a request TTL of
  60 s; a request with no endpoint gets 503; queued requests are lost if the EPP restarts (as
  stated in this project's design notes; not re-checked against its source).

Ours default to 1,000 held requests and 180 s per model: a bound on memory (Knative's 10,000 is
per revision across a whole cluster's activators; one router process holds less), and a wait
longer than a GPU engine's cold start (~60 s for an 8B model with weights streamed, more from a
cold node) but well inside Knative's 300 s, the wait users set KEDA's to for LLMs (~180 s).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.router.endpoints import Endpoint

__all__ = ["HoldSettings", "HoldQueue", "HoldRejected"]


class HoldSettings(BaseModel):
    """Bounds on requests held while a model has no Ready engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_held: int = Field(1000, ge=0, description="requests held per model at once; 0 = never hold")
    max_wait_s: float = Field(180.0, ge=0.0, description="longest a request is held, seconds")
    retry_after_s: int = Field(10, ge=0, description="Retry-After on a 503 past either bound, seconds")


class HoldRejected(Exception):
    """The request cannot be held (queue full) or was held past the wait bound."""

    def __init__(self, model: str, why: str, held_s: float):
        super().__init__(f"model {model!r}: {why}")
        self.model, self.why, self.held_s = model, why, held_s


class HoldQueue:
    """Held requests per model; `notify()` wakes them when engines change. One event loop only."""

    def __init__(self, settings: HoldSettings, clock: Callable[[], float] = time.monotonic, poll_s: float = 0.25,
                 on_hold: Callable[[str], None] | None = None):
        self.settings = settings
        self._on_hold = on_hold   # called with the model when one of its requests starts waiting; must not block
        self._clock = clock
        self._poll_s = poll_s
        self._held: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    def notify(self, model: str | None = None) -> None:
        """Wake the requests held for `model` (all models when None) to look for engines again."""
        for name in ([model] if model is not None else list(self._events)):
            event = self._events.pop(name, None)
            if event is not None:
                event.set()

    async def wait(self, model: str, ready: Callable[[], Sequence[Endpoint]]) -> tuple[Sequence[Endpoint], float]:
        """Wait until `ready()` lists an engine; return it and the seconds held. Raises HoldRejected."""
        start = self._clock()
        if self.held(model) >= self.settings.max_held:
            raise HoldRejected(model, f"no ready engine and {self.held(model)} requests already held "
                                      f"(max_held {self.settings.max_held})", 0.0)
        self._held[model] = self.held(model) + 1
        try:
            if self._on_hold is not None:
                self._on_hold(model)
            deadline = start + self.settings.max_wait_s
            while True:
                endpoints = ready()
                if endpoints:
                    return endpoints, self._clock() - start
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise HoldRejected(model, f"no engine became ready within max_wait_s "
                                              f"{self.settings.max_wait_s:g} s", self._clock() - start)
                event = self._events.get(model)
                if event is None:
                    event = self._events[model] = asyncio.Event()
                try:
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, self._poll_s))
                except TimeoutError:
                    pass
        finally:
            self._held[model] -= 1
