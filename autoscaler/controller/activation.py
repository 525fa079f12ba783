"""Pokes from the router: a request held for a model at zero makes the controller decide at once.

The router writes `status.activation` of the model's ModelAutoscaler when it starts holding a
request (`autoscaler/router/activation.py`). The controller's ModelAutoscaler watch hands every
changed object to `Activations.seen`; a `requestedAt` it has not seen before is a poke: the tick
runs at once instead of at its next scheduled time, and for that tick the model's observation
counts the held requests the poke reported, as long as the model has nothing Ready or starting
(engines, once there, count their own queue; a metric of the held requests reaches Prometheus only
after a scrape and its delivery lag). An activation already in status when the controller starts
or lists again is history, not a poke.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from autoscaler.contract import Observation
from autoscaler.controller.pods import FleetCount
from autoscaler.controller.reflector import object_key

__all__ = ["ACTIVATION_FRESH_S", "Activation", "Activations", "with_activation"]

# A poke older than this (on the controller's clock, from when its watch saw it) counts for nothing:
# by then the regular metrics show the held requests.
ACTIVATION_FRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class Activation:
    held: int
    seen_at: float


def _stamp(obj: dict) -> tuple[str | None, int]:
    activation = (obj.get("status") or {}).get("activation")
    if not isinstance(activation, dict):
        return None, 0
    held = activation.get("heldRequests")
    return activation.get("requestedAt"), held if isinstance(held, int) and held > 0 else 1


class Activations:
    """The pokes not yet used, per ModelAutoscaler (thread-safe: watch thread in, tick threads out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamps: dict[tuple[str, str], str | None] = {}
        self._pending: dict[tuple[str, str], Activation] = {}

    def listed(self, objects: list[dict]) -> None:
        """A fresh list: what the objects' status says now is history."""
        with self._lock:
            self._stamps = {object_key(o): _stamp(o)[0] for o in objects}

    def seen(self, obj: dict, now: float) -> bool:
        """A watch event's object; True when it carries a new poke."""
        key = object_key(obj)
        stamp, held = _stamp(obj)
        with self._lock:
            if stamp is None or self._stamps.get(key) == stamp:
                return False
            self._stamps[key] = stamp
            self._pending[key] = Activation(held, now)
        return True

    def pending(self, now: float, since: float | None = None) -> bool:
        """Whether a fresh poke (seen at or after `since`, if given) waits for a tick."""
        with self._lock:
            return any(now - a.seen_at <= ACTIVATION_FRESH_S and (since is None or a.seen_at >= since)
                       for a in self._pending.values())

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._pending.pop(key, None)
            self._stamps.pop(key, None)

    def take(self, key: tuple[str, str], now: float) -> Activation | None:
        with self._lock:
            activation = self._pending.pop(key, None)
        return activation if activation is not None and now - activation.seen_at <= ACTIVATION_FRESH_S else None


def with_activation(observation: Observation, fleet: FleetCount, activation: Activation | None) -> Observation:
    """The observation a poked decision sees: the poke's held requests, while no engine can count them."""
    if activation is None or fleet.ready or fleet.loading:
        return observation
    held = max(observation.held_requests or 0.0, float(activation.held))
    return dataclasses.replace(observation, held_requests=held)
