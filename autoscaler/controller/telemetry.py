"""The controller's own metrics (prometheus-client) and its HTTP endpoint: /metrics, /healthz, /readyz."""
from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ControllerMetrics", "ProbeServer"]

_MODEL = ("namespace", "name", "model")


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.desired = Gauge("warmscale_controller_desired_replicas", "Replicas the last decision asked for.", _MODEL, registry=r)
        self.current = Gauge("warmscale_controller_current_replicas", "Ready plus starting replicas.", _MODEL, registry=r)
        self.ready = Gauge("warmscale_controller_ready_replicas", "Ready replicas.", _MODEL, registry=r)
        self.pending = Gauge("warmscale_controller_unschedulable_replicas", "Pods the scheduler cannot place.", _MODEL, registry=r)
        self.reason = Gauge("warmscale_controller_decision_reason", "1 for the reason of the last decision.", (*_MODEL, "reason"), registry=r)
        self.tick_seconds = Histogram("warmscale_controller_tick_seconds", "Wall time of one tick over every model.",
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.errors = Counter("warmscale_controller_errors_total", "Failed operations.", ("operation",), registry=r)
        self.writes = Counter("warmscale_controller_api_writes_total", "Writes to the API server.", ("kind",), registry=r)
        self.leader = Gauge("warmscale_controller_leader", "1 while this replica holds the Lease.", registry=r)
        self.activations = Counter("warmscale_controller_activations_total",
                                   "Pokes from a router holding a request for a model at zero.", registry=r)
        self.models = Gauge("warmscale_controller_models", "ModelAutoscalers ticked.", registry=r)
        self._reasons: dict[tuple[str, str, str], str] = {}

    def set_reason(self, key: tuple[str, str, str], reason: str) -> None:
        old = self._reasons.get(key)
        if old == reason:
            return
        if old is not None:
            self.reason.remove(*key, old)
        self.reason.labels(*key, reason).set(1)
        self._reasons[key] = reason

    def forget(self, key: tuple[str, str, str]) -> None:
        for gauge in (self.desired, self.current, self.ready, self.pending):
            try:
                gauge.remove(*key)
            except KeyError:
                pass
        old = self._reasons.pop(key, None)
        if old is not None:
            self.reason.remove(*key, old)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ProbeServer:
    """Serves /metrics, /healthz (threads alive) and /readyz (caches synced) on `host:port` (0 = any free port)."""

    def __init__(self, metrics: ControllerMetrics, healthy: Callable[[], bool], ready: Callable[[], bool],
                 host: str = "0.0.0.0", port: int = 0):
        routes = {"/metrics": lambda: (200, metrics.render(), CONTENT_TYPE_LATEST),
                  "/healthz": lambda: _probe(healthy()), "/readyz": lambda: _probe(ready())}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                route = routes.get(self.path.split("?")[0])
                code, body, ctype = route() if route else (404, b"not found\n", "text/plain")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="probe-server", daemon=True)

    def start(self) -> "ProbeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _probe(ok: bool) -> tuple[int, bytes, str]:
    return (200, b"ok\n", "text/plain") if ok else (503, b"not ready\n", "text/plain")
