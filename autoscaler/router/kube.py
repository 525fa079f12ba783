"""The router in a cluster: each ModelAutoscaler's model is served by the Ready pods of its selector.

`ClusterEndpoints` is the router's `EndpointSource` there. It watches the ModelAutoscalers and the
pods of one namespace (the controller's reflectors and pod reading, so both count a pod alike) and
rebuilds `{model: engines}` on every change, so a request costs a dict lookup. An engine's URL is
`http://<pod IP>:<spec.metrics.port>` (vLLM serves its API and /metrics on one port), or
`engine_url_template` with {name}, {namespace}, {ip} and {port} filled in (the test ground sends
fake pods' traffic to loopback that way).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import kubernetes
import pydantic

from autoscaler.controller.crd import GROUP, PLURAL, VERSION
from autoscaler.controller.pods import PodIndex, PodInfo, count_fleet, pod_info
from autoscaler.controller.reflector import Reflector
from autoscaler.controller.spec import ModelAutoscalerSpec
from autoscaler.metrics.resolver import check_url_template, url_host
from autoscaler.router.endpoints import Endpoint

__all__ = ["ClusterEndpoints", "Route", "check_engine_url_template", "engine_url"]

log = logging.getLogger(__name__)

_FIELDS = {"name": "n", "namespace": "ns", "ip": "10.0.0.1", "port": 8000}


@dataclass(frozen=True, slots=True)
class Route:
    """What the router needs of one ModelAutoscaler."""

    namespace: str
    name: str
    model: str
    selector: tuple[tuple[str, str], ...]
    port: int


def check_engine_url_template(template: str) -> str:
    """`template` if it can work; else ValueError naming what is wrong."""
    return check_url_template(template, "engine URL template", _FIELDS)


def engine_url(pod: PodInfo, port: int, template: str | None = None) -> str | None:
    """The base URL (no /v1) of the engine in `pod`; None while it has no IP and the URL needs one."""
    if template is not None:
        if "{ip}" in template and not pod.ip:
            return None
        return template.format(name=pod.name, namespace=pod.namespace, ip=pod.ip or "", port=port).rstrip("/")
    if not pod.ip:
        return None
    return f"http://{url_host(pod.ip)}:{port}"


def _route(obj: dict) -> Route | None:
    meta = obj.get("metadata") or {}
    try:
        spec = ModelAutoscalerSpec.model_validate(obj.get("spec") or {})
    except pydantic.ValidationError as exc:
        log.warning("ModelAutoscaler %s/%s is not valid; its model is not routed: %s",
                    meta.get("namespace"), meta.get("name"), exc.errors()[0]["msg"])
        return None
    return Route(meta.get("namespace", ""), meta.get("name", ""), spec.model,
                 tuple(sorted(spec.selector.match_labels.items())), spec.metrics.port)


class ClusterEndpoints:
    """Engines for each ModelAutoscaler's model in `namespace`, from the API server.

    `on_change()` is called (from a watch thread) whenever the engines may have changed: the router
    wakes its held requests with it. Two ModelAutoscalers naming one model share its engines."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str,
                 engine_url_template: str | None = None, on_change: Callable[[], None] | None = None,
                 on_error: Callable[[str, Exception], None] | None = None):
        self.namespace = namespace
        self._template = None if engine_url_template is None else check_engine_url_template(engine_url_template)
        self._on_change = on_change
        custom, core = kubernetes.client.CustomObjectsApi(api_client), kubernetes.client.CoreV1Api(api_client)
        report = on_error or (lambda op, exc: log.warning("%s failed: %s", op, exc))
        self.autoscalers = Reflector(
            "modelautoscalers", lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw),
            transform=_route, on_error=report, on_change=self._rebuild)
        self.pods = Reflector("pods", lambda **kw: core.list_namespaced_pod(namespace, **kw), transform=pod_info,
                              on_error=report, on_change=self._rebuild)
        self._lock = threading.Lock()
        # both watch threads rebuild: one at a time, or an older view could be swapped in after a newer one
        self._rebuilding = threading.Lock()
        self._engines: dict[str, tuple[Endpoint, ...]] = {}
        self._starting: dict[str, int] = {}
        self._routes: dict[str, tuple[Route, ...]] = {}

    def start(self) -> ClusterEndpoints:
        self.autoscalers.start()
        self.pods.start()
        return self

    def stop(self) -> None:
        self.autoscalers.stop()
        self.pods.stop()

    def synced(self) -> bool:
        return self.autoscalers.synced.is_set() and self.pods.synced.is_set()

    # ---------------------------------------------------------------- EndpointSource
    def models(self) -> Sequence[str]:
        with self._lock:
            return tuple(self._engines)

    def ready(self, model: str) -> Sequence[Endpoint]:
        with self._lock:
            return self._engines.get(model, ())

    def starting(self, model: str) -> int:
        """Pods of `model` on their way (starting, or waiting for a node): a held request need not wake anyone."""
        with self._lock:
            return self._starting.get(model, 0)

    def autoscalers_of(self, model: str) -> tuple[Route, ...]:
        """The ModelAutoscalers that scale `model`'s engines (whom a held request should wake)."""
        with self._lock:
            return self._routes.get(model, ())

    # ---------------------------------------------------------------- from the watches
    def _rebuild(self, _obj: dict | None = None) -> None:
        with self._rebuilding:
            self._rebuild_now()
        if self._on_change is not None:
            self._on_change()

    def _rebuild_now(self) -> None:
        routes = [r for r in self.autoscalers.items() if r is not None]
        index = PodIndex(self.pods.items())
        engines: dict[str, dict[str, Endpoint]] = {}
        starting: dict[str, int] = {}
        by_model: dict[str, list[Route]] = {}
        for route in routes:
            by_model.setdefault(route.model, []).append(route)
            listed = engines.setdefault(route.model, {})
            fleet = count_fleet(index.select(route.namespace, dict(route.selector)))
            starting[route.model] = starting.get(route.model, 0) + len(fleet.loading) + len(fleet.unschedulable)
            for pod in fleet.ready:
                url = engine_url(pod, route.port, self._template)
                if url is not None:
                    listed[f"{pod.namespace}/{pod.name}"] = Endpoint(f"{pod.namespace}/{pod.name}", url)
        with self._lock:
            self._engines = {model: tuple(eps.values()) for model, eps in engines.items()}
            self._starting = starting
            self._routes = {model: tuple(rs) for model, rs in by_model.items()}
