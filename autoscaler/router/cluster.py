"""The router as a cluster Deployment: engines from the API server, held requests poke the controller.

One router serves the models of every ModelAutoscaler in its namespace (`kube.ClusterEndpoints`)
and, when it starts holding a request for a model at zero, writes that ModelAutoscaler's
status.activation (`activation.ActivationWriter`) so the controller decides at once. Its /metrics
carry the arrivals and held-requests series the controller's Prometheus queries read.
"""
from __future__ import annotations

import os
import socket
import time

import kubernetes

from autoscaler.router.activation import ActivationWriter
from autoscaler.router.app import Router, build_app
from autoscaler.router.hold import HoldSettings
from autoscaler.router.kube import ClusterEndpoints
from autoscaler.router.server import ThreadedServer, bind_socket

__all__ = ["ClusterRouter"]


class ClusterRouter:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, host: str = "0.0.0.0", port: int = 8080,
                 engine_url_template: str | None = None, hold: HoldSettings | None = None,
                 identity: str | None = None, activation_interval_s: float = 1.0, poke: bool = True):
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.endpoints = ClusterEndpoints(api_client, namespace, engine_url_template, on_change=self._engines_changed)
        self.activations = ActivationWriter(api_client, self.endpoints.autoscalers_of, self._held, self.identity,
                                            min_interval_s=activation_interval_s)
        # poke False: held requests reach the controller only through the router's metrics
        self.router = Router(self.endpoints, hold, on_hold=self._poke if poke else None)
        self._server = ThreadedServer(build_app(self.router), bind_socket(host, port), name="router")

    @property
    def url(self) -> str:
        return self._server.url

    def start(self, sync_timeout_s: float = 30.0) -> ClusterRouter:
        """Serve once the ModelAutoscalers and pods are listed (before that every model looks empty)."""
        self.endpoints.start()
        deadline = time.monotonic() + sync_timeout_s
        while not self.endpoints.synced():
            if time.monotonic() > deadline:
                self.endpoints.stop()
                raise TimeoutError(f"could not list ModelAutoscalers and pods in {self.endpoints.namespace!r} "
                                   f"within {sync_timeout_s:g} s")
            time.sleep(0.05)
        self.activations.start()
        try:
            self._server.start()
        except Exception:
            self._server.stop()
            self.activations.stop()
            self.endpoints.stop()
            raise
        return self

    def stop(self) -> None:
        self._server.stop()
        self.activations.stop()
        self.endpoints.stop()

    def __enter__(self) -> ClusterRouter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _held(self, model: str) -> int:
        return self.router.held(model)

    def _poke(self, model: str) -> None:
        """A request of `model` started waiting: wake the controller unless an engine is already on its way."""
        if not self.endpoints.starting(model):
            self.activations.request(model)

    def _engines_changed(self) -> None:
        self.router.notify_threadsafe()
