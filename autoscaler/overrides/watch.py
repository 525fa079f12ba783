"""ScalingOverride objects kept in memory by list-then-watch (the informer pattern), so the API reads
overrides without a round trip to the API server: lists, gets, the conflict check before a create and
idempotency look-ups all come from here while the watch is up.

Reads stay consistent with the caller's own writes: the store puts what the API server answered to
a create into the cache at once, and takes a deleted object out (ignoring the watch's late events for
it), so a list right after a POST or DELETE on the same replica shows it. While the watch is down
(`healthy()` is False) the store reads the API server itself, so an unreachable server is still a 503.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes

from autoscaler.controller.reflector import Reflector, object_key
from autoscaler.overrides.model import GROUP, PLURAL, VERSION, ScalingOverride

__all__ = ["OverrideWatch", "Entry"]

log = logging.getLogger(__name__)
TOMBSTONE_S = 60.0     # how long a locally deleted object's late watch events are ignored
MAX_BACKOFF_S = 30.0   # between lists while they keep failing (no rights, API server away)


@dataclass(frozen=True, slots=True)
class Entry:
    """One object as read: the override (None if it cannot be read, e.g. a kubectl-written one the
    API server let through), its idempotency key and request hash, uid and resourceVersion."""

    override: ScalingOverride | None
    idempotency_key: str
    body_hash: str
    uid: str
    resource_version: str


def entry_of(obj: dict) -> Entry:
    from autoscaler.overrides.kube import BODY_HASH_ANNOTATION, IDEMPOTENCY_LABEL, from_object
    meta = obj.get("metadata") or {}
    try:
        override: ScalingOverride | None = from_object(obj)
    except (KeyError, ValueError, TypeError) as err:
        log.warning("override %s/%s cannot be read: %s", meta.get("namespace"), meta.get("name"), err)
        override = None
    return Entry(override, (meta.get("labels") or {}).get(IDEMPOTENCY_LABEL, ""),
                 (meta.get("annotations") or {}).get(BODY_HASH_ANNOTATION, ""), meta.get("uid", ""),
                 meta.get("resourceVersion", ""))


def _newer(rv: str, than: str) -> bool:
    """resourceVersions are opaque strings; the API server's are integers from etcd: compare those."""
    try:
        return int(rv) > int(than)
    except ValueError:
        return rv != than


class OverrideWatch(Reflector):
    """Every ScalingOverride (of `namespace`, or all) in memory, with a version that changes on every change."""

    def __init__(self, api_client: Any, namespace: str | None = None, backoff_s: float = 1.0,
                 watch_timeout_s: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        api = kubernetes.client.CustomObjectsApi(api_client)
        if namespace:
            list_fn = lambda **kw: api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)  # noqa: E731
        else:
            list_fn = lambda **kw: api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)  # noqa: E731
        super().__init__("overrides", list_fn, transform=entry_of, backoff_s=backoff_s, watch_timeout_s=watch_timeout_s)
        self.namespace = namespace
        self._clock = clock
        self._tombstones: dict[tuple[str, str], tuple[str, float]] = {}   # key -> (uid, until)
        self._version = 0
        self._up = False          # listed and watching: the cache follows the API server

    def wait_synced(self, timeout_s: float) -> bool:
        return self.synced.wait(timeout_s)

    # ---------------------------------------------------------------- reads
    def healthy(self) -> bool:
        return self._up

    def version(self) -> int | None:
        """Changes on every change to the cache; None while the watch is down."""
        return self._version if self._up else None

    def entries(self) -> list[Entry]:
        return self.items()

    def entry(self, namespace: str, name: str) -> Entry | None:
        return self.get(namespace, name)

    # ---------------------------------------------------------------- the store's own writes
    def wrote(self, obj: dict) -> None:
        """An object the API server just returned for a create: in the cache now (unless the watch
        already has it, or something newer)."""
        entry = entry_of(obj)
        key = object_key(obj)
        with self._lock:
            current = self._items.get(key)
            if current is None or _newer(entry.resource_version, current.resource_version):
                self._items[key] = entry
                self._version += 1

    def deleted(self, namespace: str, name: str, uid: str | None) -> None:
        """An object the API server just deleted: out of the cache now, and its late events ignored."""
        key = (namespace, name)
        with self._lock:
            current = self._items.get(key)
            if current is None or (uid and current.uid != uid):
                return
            del self._items[key]
            self._tombstones[key] = (current.uid, self._clock() + TOMBSTONE_S)
            self._version += 1

    # ---------------------------------------------------------------- the reflector's hooks
    def _failed(self, operation: str, exc: Exception) -> None:
        if self._up:
            log.warning("override watch down (reads go to the API server): %s: %s", operation, exc)
        self._up = False

    def _list_backoff_s(self, failures: int) -> float:
        # less often each time: no rights, or the API server away for long
        return min(MAX_BACKOFF_S, self._backoff_s * 2 ** (failures - 1))

    def _watching(self) -> None:
        self._up = True

    def _replace(self, objects: list[dict]) -> None:
        items = {object_key(o): entry_of(o) for o in objects}
        with self._lock:
            now = self._clock()
            self._tombstones = {k: v for k, v in self._tombstones.items() if v[1] > now}
            for key, (uid, _) in self._tombstones.items():
                if key in items and items[key].uid == uid:
                    del items[key]
            self._items = items
            self._version += 1

    def _event(self, kind: str, obj: dict) -> None:
        key = object_key(obj)
        uid = (obj.get("metadata") or {}).get("uid", "")
        with self._lock:
            tomb = self._tombstones.get(key)
            if kind == "DELETED":
                if tomb is not None and tomb[0] == uid:
                    del self._tombstones[key]
                current = self._items.get(key)
                if current is not None and current.uid == uid:
                    del self._items[key]
                    self._version += 1
            elif tomb is None or tomb[0] != uid:
                self._items[key] = entry_of(obj)
                self._version += 1
