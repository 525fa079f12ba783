"""Overrides as ScalingOverride objects and their audit trail as OverrideAuditRecord objects plus
Events, in the Kubernetes API server: the cluster is the source of truth, so a restarted or newly
elected controller sees the same overrides and expiry times."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from autoscaler.contract import OverrideKind
from autoscaler.overrides.errors import Conflict, FieldError, NotFound, Unavailable
from autoscaler.overrides.model import (AUDIT_KIND, AUDIT_PLURAL, GROUP, KIND, PLURAL, VERSION, AuditEntry,
                                        ScalingOverride, Schedule, format_duration, parse_duration, utc)
from autoscaler.overrides.store import ActiveSpecsMixin

if TYPE_CHECKING:
    from autoscaler.overrides.watch import OverrideWatch

__all__ = ["KubeOverrideStore", "KubeAuditLog", "to_object", "from_object", "specs_from_objects"]

API_VERSION = f"{GROUP}/{VERSION}"
IDEMPOTENCY_LABEL = f"{GROUP}/idempotency-key"
BODY_HASH_ANNOTATION = f"{GROUP}/request-hash"
TARGET_LABEL = f"{GROUP}/target"
OVERRIDE_LABEL = f"{GROUP}/override"
ACTION_LABEL = f"{GROUP}/action"
REQUEST_TIMEOUT = (2, 5)       # connect, read (seconds): a dead API server gives 503 fast, not a hang

T = TypeVar("T")


def _ts(value: datetime) -> str:
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def to_object(ov: ScalingOverride, idempotency_key: str | None = None, body_hash: str | None = None) -> dict:
    """The ScalingOverride object the API writes (expiresAt resolved, author from the authenticated user)."""
    spec: dict[str, Any] = {"target": ov.target, "kind": OverrideKind(ov.kind).value,
                            "expiresAt": _ts(ov.expires_at), "reason": ov.reason, "author": ov.author}
    for field, key in (("replicas", "replicas"), ("min_replicas", "minReplicas"), ("max_replicas", "maxReplicas")):
        if getattr(ov, field) is not None:
            spec[key] = getattr(ov, field)
    if ov.schedule is not None:
        spec["schedule"] = {"cron": ov.schedule.cron, "timeZone": ov.schedule.time_zone,
                            "duration": format_duration(ov.schedule.duration_s)}
    metadata: dict[str, Any] = {"name": ov.name, "namespace": ov.namespace, "labels": {TARGET_LABEL: ov.target}}
    if idempotency_key:
        metadata["labels"][IDEMPOTENCY_LABEL] = idempotency_key
        metadata["annotations"] = {BODY_HASH_ANNOTATION: body_hash or ""}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def from_object(obj: dict) -> ScalingOverride:
    """An object as stored, whoever wrote it (the API, kubectl, GitOps). Expiry: spec.expiresAt, or
    creationTimestamp + spec.duration. Author: spec.author, else the field manager that created it."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    created = _parse_ts(meta["creationTimestamp"])
    if spec.get("expiresAt"):
        expires = _parse_ts(spec["expiresAt"])
    else:
        expires = created + timedelta(seconds=parse_duration(spec.get("duration", "0s")))
    schedule = None
    if spec.get("schedule"):
        s = spec["schedule"]
        schedule = Schedule(cron=s["cron"], time_zone=s.get("timeZone", "UTC"), duration_s=parse_duration(s["duration"]))
    return ScalingOverride(namespace=meta["namespace"], name=meta["name"], target=spec["target"],
                           kind=OverrideKind(spec["kind"]), replicas=spec.get("replicas"),
                           min_replicas=spec.get("minReplicas"), max_replicas=spec.get("maxReplicas"),
                           expires_at=expires, reason=spec.get("reason", ""), author=spec.get("author") or _manager(meta),
                           schedule=schedule, created_at=created, uid=meta.get("uid", ""))


def _manager(meta: dict) -> str:
    fields = meta.get("managedFields") or []
    return f"field manager {fields[0].get('manager', 'unknown')}" if fields else "unknown"


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API server call, mapping its failures onto the override errors."""
    try:
        return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    except ApiException as err:
        raise _mapped(err) from None
    except (HTTPError, OSError) as err:
        raise Unavailable(f"the Kubernetes API server is unreachable: {err.__class__.__name__}") from None


def _mapped(err: ApiException) -> Exception:
    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") or err.reason or "error"
    if err.status == 404:
        return NotFound(message)
    if err.status == 409:
        return Conflict(message, "name")
    if err.status == 422:
        causes = (body.get("details") or {}).get("causes") or [{}]
        return FieldError(message, causes[0].get("field"), None)
    if err.status in (400, 410):
        return FieldError(message, "continue" if err.status == 410 else None, None)
    if err.status == 429 or err.status >= 500:
        retry = (err.headers or {}).get("Retry-After", "5")
        return Unavailable(f"the Kubernetes API server answered {err.status}: {message}",
                           int(retry) if str(retry).isdigit() else 5)
    return Unavailable(f"the Kubernetes API server refused the call ({err.status}): {message}")


class KubeOverrideStore(ActiveSpecsMixin):
    """ScalingOverride objects through the custom objects API (the caller's ApiClient and identity).

    With a `watch` (an OverrideWatch over the same objects), reads come from memory while the watch is
    up, so a read costs no round trip and a write one (the create itself); the store's own writes go
    into the cache as the API server answers them. Without one, or while it is down, every read
    asks the API server."""

    def __init__(self, api_client: kubernetes.client.ApiClient, watch: "OverrideWatch | None" = None) -> None:
        self.api = kubernetes.client.CustomObjectsApi(api_client)
        self.watch = watch

    def version(self) -> int | None:
        """Changes with every change the watch sees; None without a watch or while it is down."""
        return self.watch.version() if self.watch is not None else None

    def _cached(self, namespace: str | None) -> bool:
        return (self.watch is not None and self.watch.healthy()
                and (self.watch.namespace is None or self.watch.namespace == namespace))

    def list(self, namespace: str | None = None, target: str | None = None) -> list[ScalingOverride]:
        if self._cached(namespace):
            return sorted((e.override for e in self.watch.entries()  # type: ignore[union-attr]
                           if e.override is not None and (namespace is None or e.override.namespace == namespace)
                           and (target is None or e.override.target == target)),
                          key=lambda o: (o.namespace, o.name))
        selector = {"field_selector": f"spec.target={target}"} if target else {}
        if namespace is None:
            objs = call(self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL, **selector)
        else:
            objs = call(self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, **selector)
        return sorted((from_object(o) for o in objs["items"]), key=lambda o: (o.namespace, o.name))

    def get(self, namespace: str, name: str) -> ScalingOverride:
        if self._cached(namespace):
            entry = self.watch.entry(namespace, name)  # type: ignore[union-attr]
            if entry is not None and entry.override is not None:
                return entry.override
            # not seen yet (created through another replica a moment ago?) or not readable: ask the server
        try:
            return from_object(call(self.api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name))
        except NotFound:
            raise NotFound(f"override {namespace}/{name} does not exist", "name", name) from None

    def create(self, override: ScalingOverride, idempotency_key: str | None = None,
               body_hash: str | None = None) -> ScalingOverride:
        obj = to_object(override, idempotency_key, body_hash)
        try:
            created = call(self.api.create_namespaced_custom_object, GROUP, VERSION, override.namespace, PLURAL, obj)
        except Conflict:
            raise Conflict(f"override {override.namespace}/{override.name} already exists", "name",
                           override.name) from None
        if self.watch is not None:
            self.watch.wrote(created)
        return from_object(created)

    def find_idempotent(self, namespace: str, idempotency_key: str,
                        fresh: bool = False) -> tuple[ScalingOverride, str] | None:
        if not fresh and self._cached(namespace):
            for entry in self.watch.entries():  # type: ignore[union-attr]
                if (entry.idempotency_key == idempotency_key and entry.override is not None
                        and entry.override.namespace == namespace):
                    return entry.override, entry.body_hash
            return None
        objs = call(self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                    label_selector=f"{IDEMPOTENCY_LABEL}={idempotency_key}")
        if not objs["items"]:
            return None
        obj = objs["items"][0]
        return from_object(obj), (obj["metadata"].get("annotations") or {}).get(BODY_HASH_ANNOTATION, "")

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        body = {"preconditions": {"uid": uid}} if uid else {}
        try:
            call(self.api.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body=body)
        except NotFound:
            raise NotFound(f"override {namespace}/{name} does not exist", "name", name) from None
        except Conflict:
            raise Conflict(f"override {namespace}/{name} was replaced while being deleted; read it again",
                           "name", name) from None
        if self.watch is not None:
            self.watch.deleted(namespace, name, uid)


_EVENT_REASON = {"create": "OverrideCreated", "delete": "OverrideDeleted", "expire": "OverrideExpired"}


def _audit_name(now: float) -> str:
    # names list in order; counting down makes the newest come first
    return f"a{10**13 - int(now * 1000):013d}-{uuid.uuid4().hex[:8]}"


class KubeAuditLog:
    """One immutable OverrideAuditRecord per mutating call (durable, listable with limit/continue),
    plus an Event on the override for `kubectl describe` (best effort: Events age out)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, reporter: str = "warmscale-api") -> None:
        self.api = kubernetes.client.CustomObjectsApi(api_client)
        self.events = kubernetes.client.CoreV1Api(api_client)
        self.reporter = reporter
        # Events are posted off the request path: the audit record is the durable trail, an Event a convenience
        self._events = ThreadPoolExecutor(max_workers=2, thread_name_prefix="override-events")

    def record(self, entry: AuditEntry) -> AuditEntry:
        name = _audit_name(entry.time.timestamp())
        labels = {TARGET_LABEL: entry.target, OVERRIDE_LABEL: entry.override, ACTION_LABEL: entry.action}
        obj = {"apiVersion": API_VERSION, "kind": AUDIT_KIND,
               "metadata": {"name": name, "namespace": entry.namespace, "labels": labels},
               "spec": {"time": _ts(entry.time), "timeMicros": int(entry.time.timestamp() * 1e6) % 1_000_000,
                        "actor": entry.actor, "action": entry.action, "override": entry.override,
                        "target": entry.target,
                        "previous": json.dumps(entry.previous) if entry.previous is not None else "",
                        "current": json.dumps(entry.current) if entry.current is not None else ""}}
        call(self.api.create_namespaced_custom_object, GROUP, VERSION, entry.namespace, AUDIT_PLURAL, obj)
        self._events.submit(self._event, entry)
        return entry.model_copy(update={"id": f"{entry.namespace}/{name}"})

    def remove(self, entry_id: str) -> None:
        namespace, name = entry_id.split("/", 1)
        try:
            call(self.api.delete_namespaced_custom_object, GROUP, VERSION, namespace, AUDIT_PLURAL, name)
        except NotFound:
            pass

    def query(self, namespace: str | None = None, target: str | None = None, override: str | None = None,
              limit: int = 100, continue_token: str | None = None) -> tuple[list[AuditEntry], str | None]:
        labels = [f"{k}={v}" for k, v in ((TARGET_LABEL, target), (OVERRIDE_LABEL, override)) if v]
        kwargs: dict[str, Any] = {"limit": limit}
        if labels:
            kwargs["label_selector"] = ",".join(labels)
        if continue_token:
            kwargs["_continue"] = continue_token
        if namespace is None:
            objs = call(self.api.list_cluster_custom_object, GROUP, VERSION, AUDIT_PLURAL, **kwargs)
        else:
            objs = call(self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, AUDIT_PLURAL, **kwargs)
        entries = [_audit_entry(o) for o in objs["items"]]
        if namespace is None:   # across namespaces the API server orders by namespace first
            entries.sort(key=lambda e: e.time, reverse=True)
        return entries, (objs.get("metadata") or {}).get("continue") or None

    def _event(self, entry: AuditEntry) -> None:
        now = _ts(entry.time)
        note = f"{entry.action} by {entry.actor}"
        if entry.previous is not None and entry.action != "create":
            note += f"; previous: {json.dumps(entry.previous)}"
        event = {"metadata": {"generateName": f"{entry.override}.", "namespace": entry.namespace},
                 "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": entry.override,
                                    "namespace": entry.namespace,
                                    "uid": (entry.current or entry.previous or {}).get("uid", "")},
                 "reason": _EVENT_REASON.get(entry.action, "OverrideChanged"),
                 "message": note[:1024], "type": "Normal", "firstTimestamp": now, "lastTimestamp": now,
                 "count": 1, "source": {"component": self.reporter}}
        try:
            call(self.events.create_namespaced_event, entry.namespace, event)
        except (Unavailable, FieldError, Conflict, NotFound):
            pass   # the audit record above is the durable trail; an Event is a convenience


def _audit_entry(obj: dict) -> AuditEntry:
    spec = obj["spec"]
    when = _parse_ts(spec["time"]) + timedelta(microseconds=spec.get("timeMicros", 0))
    return AuditEntry(id=f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", time=when,
                      actor=spec["actor"], action=spec["action"], namespace=obj["metadata"]["namespace"],
                      override=spec["override"], target=spec["target"],
                      previous=json.loads(spec["previous"]) if spec.get("previous") else None,
                      current=json.loads(spec["current"]) if spec.get("current") else None)


def specs_from_objects(objects: list[dict], namespace: str, autoscaler: str, now: float) -> list:
    """For a controller that watches ScalingOverride objects itself: the OverrideSpecs of one
    ModelAutoscaler in force at `now` (objects of other targets and namespaces are skipped; an object
    that cannot be read, e.g. a kubectl-written one the API server let through, is logged and left out)."""
    from autoscaler.overrides.resolve import active_specs, log
    mine = []
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if meta.get("namespace") != namespace or spec.get("target") != autoscaler:
            continue
        try:
            mine.append(from_object(obj))
        except (KeyError, ValueError) as err:
            log.warning("override %s/%s ignored: %s", namespace, meta.get("name"), err)
    return active_specs(mine, now)
