"""The activator's poke in a cluster: the router tells the controller that it holds a request.

A model at zero has no engine to count its queue, and a metric of the held requests reaches the
controller only after a scrape and Prometheus' delivery lag (15 s + 15 s by default). So when the
router starts holding a request for a model with nothing Ready or starting, it writes `status.activation` of the model's ModelAutoscaler
(`{requestedAt, heldRequests, router}`, a merge patch of the status subresource: the router may
write nothing else). The controller's watch sees the write within milliseconds and decides for
that model at once, out of its tick schedule, as Knative's activator pokes its autoscaler and
local mode's router wakes its loop.

Writes are made on a thread of their own (the router's event loop never waits on the API server)
and at most one per model per `min_interval_s`: a burst of held requests costs one write.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import kubernetes

from autoscaler.controller.crd import GROUP, PLURAL, VERSION
from autoscaler.router.kube import Route

__all__ = ["ActivationWriter", "activation_status"]

log = logging.getLogger(__name__)


def activation_status(held: int, router: str, wall_time: float) -> dict:
    """The status.activation a poke writes."""
    at = datetime.fromtimestamp(wall_time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"requestedAt": at, "heldRequests": held, "router": router}


class ActivationWriter:
    """`request(model)` (any thread, never blocks) -> a status.activation write for each
    ModelAutoscaler of `model`. `held(model)` is read when the write is made."""

    def __init__(self, api_client: kubernetes.client.ApiClient, routes: Callable[[str], tuple[Route, ...]],
                 held: Callable[[str], int], identity: str, min_interval_s: float = 1.0,
                 on_error: Callable[[str, Exception], None] | None = None):
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._routes = routes
        self._held = held
        self._identity = identity
        self._min_interval_s = min_interval_s
        self._on_error = on_error or (lambda op, exc: log.warning("%s failed: %s", op, exc))
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._last: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activation", daemon=True)

    def start(self) -> ActivationWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def request(self, model: str) -> None:
        with self._lock:
            self._pending.add(model)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_due())
            self._wake.clear()
            for model in self._due(time.monotonic()):
                self._write(model)

    def _next_due(self) -> float | None:
        with self._lock:
            if not self._pending:
                return None
            now = time.monotonic()
            return max(0.0, min(self._last.get(m, -1e9) + self._min_interval_s for m in self._pending) - now)

    def _due(self, now: float) -> list[str]:
        with self._lock:
            due = [m for m in self._pending if now - self._last.get(m, -1e9) >= self._min_interval_s]
            for model in due:
                self._pending.discard(model)
                self._last[model] = now
        return due

    def _write(self, model: str) -> None:
        body = {"status": {"activation": activation_status(self._held(model), self._identity, time.time())}}
        for route in self._routes(model):
            try:
                self._custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, route.namespace, PLURAL, route.name, body,
                    _content_type="application/merge-patch+json")
            except Exception as exc:  # noqa: BLE001 - the held request still waits; the tick will see the queue
                self._on_error(f"activation {route.namespace}/{route.name}", exc)
