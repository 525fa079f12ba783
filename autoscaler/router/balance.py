"""Least-loaded choice among a model's engines, by running + waiting requests.

An engine's load is what this router has in flight to it right now plus what others have there:
the engine's scraped `vllm:num_requests_running + vllm:num_requests_waiting`, less what this
router had in flight to it when that scrape was taken (never below 0). With one router (local
mode) that second term is ~0 and the choice follows the router's own exact count; with several
routers or clients that bypass it, the scrape adds what they put there. Ties go round-robin, so
an idle fleet spreads requests instead of piling them on the first engine.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.router.endpoints import Endpoint

__all__ = ["LoadTracker"]


@dataclass(slots=True)
class _Load:
    inflight: int = 0
    others: float = 0.0   # scraped running + waiting not sent by this router


class LoadTracker:
    """Per-engine load. Called from one event loop (not thread-safe by design: no lock on the hot path)."""

    def __init__(self) -> None:
        self._loads: dict[str, _Load] = {}
        self._turn = 0

    def _get(self, endpoint_id: str) -> _Load:
        load = self._loads.get(endpoint_id)
        if load is None:
            load = self._loads[endpoint_id] = _Load()
        return load

    def load(self, endpoint_id: str) -> float:
        entry = self._loads.get(endpoint_id)
        return 0.0 if entry is None else entry.inflight + entry.others

    def inflight(self, endpoint_id: str) -> int:
        entry = self._loads.get(endpoint_id)
        return 0 if entry is None else entry.inflight

    def choose(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        """The least-loaded engine; among equals, the next in round-robin order."""
        if not endpoints:
            raise ValueError("endpoints: empty; hold the request instead")
        n = len(endpoints)
        self._turn = (self._turn + 1) % n
        best, best_load = None, 0.0
        for k in range(n):
            ep = endpoints[(self._turn + k) % n]
            load = self.load(ep.id)
            if best is None or load < best_load:
                best, best_load = ep, load
        return best

    def started(self, endpoint_id: str) -> None:
        self._get(endpoint_id).inflight += 1

    def finished(self, endpoint_id: str) -> None:
        entry = self._get(endpoint_id)
        entry.inflight = max(0, entry.inflight - 1)

    def scraped(self, endpoint_id: str, running_plus_waiting: float, inflight_at_scrape: int) -> None:
        """Record a scrape of the engine; `inflight_at_scrape` = this router's count when it was taken."""
        self._get(endpoint_id).others = max(0.0, running_plus_waiting - inflight_at_scrape)

    def forget(self, keep: set[str]) -> None:
        """Drop engines no longer listed (and with nothing in flight)."""
        for endpoint_id in [e for e, load in self._loads.items() if e not in keep and load.inflight == 0]:
            del self._loads[endpoint_id]
