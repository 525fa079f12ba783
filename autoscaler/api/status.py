"""What the API reads about autoscalers: the controller (or local mode) implements StatusSource."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autoscaler.contract import Decision, DemandForecast

__all__ = ["AutoscalerState", "StatusSource", "MemoryStatusSource"]


@dataclass(frozen=True, slots=True)
class AutoscalerState:
    """One ModelAutoscaler as its controller sees it now."""

    namespace: str
    name: str
    model: str
    current: int                  # ready + loading
    desired: int
    ready: int
    loading: int
    min_replicas: int
    max_replicas: int
    policy: str = "warmscale"
    active_override: str | None = None
    updated_at: float = 0.0       # epoch seconds of the last decision


@runtime_checkable
class StatusSource(Protocol):
    def list_autoscalers(self) -> Sequence[AutoscalerState]: ...

    def get_autoscaler(self, namespace: str, name: str) -> AutoscalerState | None: ...

    def recent_decisions(self, namespace: str, name: str, limit: int) -> Sequence[Decision]:
        """Newest first."""

    def forecast(self, namespace: str, name: str) -> DemandForecast | None: ...


class MemoryStatusSource:
    """A StatusSource held in memory: whoever runs the loop calls `update()` after each decision."""

    def __init__(self, history: int = 100) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], AutoscalerState] = {}
        self._decisions: dict[tuple[str, str], deque[Decision]] = {}
        self._forecasts: dict[tuple[str, str], DemandForecast] = {}
        self._history = history

    def update(self, state: AutoscalerState, decision: Decision | None = None,
               forecast: DemandForecast | None = None) -> None:
        key = (state.namespace, state.name)
        with self._lock:
            self._states[key] = state
            if decision is not None:
                self._decisions.setdefault(key, deque(maxlen=self._history)).appendleft(decision)
            if forecast is not None:
                self._forecasts[key] = forecast

    def list_autoscalers(self) -> Sequence[AutoscalerState]:
        with self._lock:
            return sorted(self._states.values(), key=lambda s: (s.namespace, s.name))

    def get_autoscaler(self, namespace: str, name: str) -> AutoscalerState | None:
        with self._lock:
            return self._states.get((namespace, name))

    def recent_decisions(self, namespace: str, name: str, limit: int) -> Sequence[Decision]:
        with self._lock:
            return list(self._decisions.get((namespace, name), ()))[:limit]

    def forecast(self, namespace: str, name: str) -> DemandForecast | None:
        with self._lock:
            return self._forecasts.get((namespace, name))
