"""The API as the cluster controller serves it, on its own port: overrides and their audit trail in
the API server (KubeOverrideStore, KubeAuditLog), callers checked with TokenReview and
SubjectAccessReview (KubeAuth), autoscalers' state read from the ModelAutoscaler objects the
controller already caches, and the janitor removing expired overrides while this replica leads.

The controller wires it with three arguments it has: its ApiClient, its ModelAutoscaler cache
(`items()` and `get(namespace, name)`, as the Reflector offers) and `is_leader`:

    api = ClusterApi(api_client, controller.autoscalers, controller.elector.is_leader, port=8081).start()
    ...
    api.stop()
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI

from autoscaler.api.app import create_app
from autoscaler.api.status import AutoscalerState
from autoscaler.contract import Decision, DecisionExplain, DemandForecast, Reason
from autoscaler.overrides.janitor import delete_expired
from autoscaler.overrides.store import AuditLog, OverrideStore

if TYPE_CHECKING:
    from autoscaler.overrides.watch import OverrideWatch

__all__ = ["ObjectCache", "ModelAutoscalerStatus", "cluster_app", "ClusterApi"]

log = logging.getLogger("warmscale.api")


class ObjectCache(Protocol):
    def items(self) -> list[dict]: ...

    def get(self, namespace: str, name: str) -> dict | None: ...


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _explain(data: dict | None) -> DecisionExplain | None:
    if not data:
        return None
    return DecisionExplain(need=dict(data.get("need") or {}), raw_desired=data.get("raw_desired"),
                           lead_s=data.get("lead_s"), panic=bool(data.get("panic")),
                           headroom=float(data.get("headroom", 1.0)), limits=tuple(data.get("limits") or ()),
                           override=data.get("override"), missing=tuple(data.get("missing") or ()),
                           stale=bool(data.get("stale")))


def _decision(model: str, record: dict) -> Decision:
    """A decision record from a ModelAutoscaler's status (autoscaler.controller.status.decision_record)."""
    reason = str(record.get("reason", ""))
    # a reason this version does not know (a newer controller's) is passed on as written
    known = Reason(reason) if reason in Reason._value2member_map_ else reason
    return Decision(model=model, time=_epoch(record.get("time")), current=int(record.get("current", 0)),
                    desired=int(record.get("desired", 0)), reason=known,  # type: ignore[arg-type]
                    signal=str(record.get("signal", "")),
                    detail=str(record.get("detail", "")), explain=_explain(record.get("explain")))


def _state(obj: dict) -> AutoscalerState:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    last = status.get("lastDecision") or {}
    overridden = any(c.get("type") == "Overridden" and c.get("status") == "True" for c in status.get("conditions") or [])
    override = (last.get("explain") or {}).get("override") if overridden else None
    return AutoscalerState(namespace=meta["namespace"], name=meta["name"], model=str(spec.get("model", "")),
                           current=int(status.get("currentReplicas", 0)),
                           desired=int(status.get("desiredReplicas", status.get("targetReplicas", 0))),
                           ready=int(status.get("readyReplicas", 0)), loading=int(status.get("loadingReplicas", 0)),
                           min_replicas=int(spec.get("minReplicas", 1)), max_replicas=int(spec.get("maxReplicas", 10)),
                           active_override=override, updated_at=_epoch(last.get("time")))


class ModelAutoscalerStatus:
    """A StatusSource over ModelAutoscaler objects: spec for bounds, status for counts and decisions."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache

    def list_autoscalers(self) -> Sequence[AutoscalerState]:
        return sorted((_state(o) for o in self.cache.items()), key=lambda s: (s.namespace, s.name))

    def get_autoscaler(self, namespace: str, name: str) -> AutoscalerState | None:
        obj = self.cache.get(namespace, name)
        return None if obj is None else _state(obj)

    def recent_decisions(self, namespace: str, name: str, limit: int) -> Sequence[Decision]:
        obj = self.cache.get(namespace, name)
        if obj is None:
            return []
        model = str((obj.get("spec") or {}).get("model", ""))
        return [_decision(model, r) for r in ((obj.get("status") or {}).get("recentDecisions") or [])[:limit]]

    def forecast(self, namespace: str, name: str) -> DemandForecast | None:
        return None    # the controller does not publish its forecast in status


def cluster_app(api_client: Any, cache: ObjectCache, clock: Callable[[], float] = time.time,
                watch: OverrideWatch | None = None, **options: Any) -> tuple[FastAPI, OverrideStore, AuditLog]:
    """The app on the Kubernetes backends; returns the stores too (the janitor uses them). With a
    `watch` (started by the caller), overrides are read from it rather than from the API server."""
    from autoscaler.api.auth import KubeAuth
    from autoscaler.overrides.kube import KubeAuditLog, KubeOverrideStore
    store, audit = KubeOverrideStore(api_client, watch=watch), KubeAuditLog(api_client)
    app = create_app(store, audit, ModelAutoscalerStatus(cache), KubeAuth(api_client), clock=clock,
                     title="warmscale controller", **options)
    return app, store, audit


class ClusterApi:
    """Serves the cluster app on host:port (0 = any free port) and, while `is_leader()`, removes
    expired overrides every `janitor_every_s` (expiry itself never waits for it).

    Overrides are read from a watch of the ScalingOverride objects (`override_watch`, or one this
    object starts and stops, cluster-wide, as `api_client`); while it is down, from the API server."""

    def __init__(self, api_client: Any, cache: ObjectCache, is_leader: Callable[[], bool],
                 host: str = "0.0.0.0", port: int = 8081, janitor_every_s: float = 5.0,
                 clock: Callable[[], float] = time.time, override_watch: OverrideWatch | None = None,
                 **options: Any) -> None:
        from autoscaler.overrides.watch import OverrideWatch
        from autoscaler.router.server import ThreadedServer, bind_socket
        self._own_watch = override_watch is None
        self.watch = override_watch if override_watch is not None else OverrideWatch(api_client)
        self.app, self.store, self.audit = cluster_app(api_client, cache, clock=clock, watch=self.watch, **options)
        sock = bind_socket(host, port)
        # accepted connections inherit it: without it (asyncio's loop, not uvloop) a response written
        # in two parts waits for the client's delayed ACK, 40 ms a request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server = ThreadedServer(self.app, sock, name="api")
        self._is_leader, self._clock, self._every_s = is_leader, clock, janitor_every_s
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._sweep, name="override-janitor", daemon=True)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ClusterApi:
        if self._own_watch:
            self.watch.start()
        self._server.start()
        self._janitor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._janitor.join(timeout=10)
        self._server.stop()
        if self._own_watch:
            self.watch.stop()

    def sweep_once(self) -> list[str]:
        """Remove the expired overrides now (leader only); returns 'namespace/name' of each removed."""
        if not self._is_leader():
            return []
        return delete_expired(self.store, self.audit, self._clock())

    def _sweep(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.sweep_once()
            except Exception as exc:  # noqa: BLE001 - the API server may be away: try again next round
                log.warning("override janitor: %s", exc)
