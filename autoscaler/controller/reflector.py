"""List-then-watch one kind of object into memory (the informer pattern of client-go), on raw JSON
so objects stay plain dicts or the small tuples a `transform` makes of them."""
from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["Reflector", "interrupt_watch", "object_key"]

log = logging.getLogger(__name__)


class Reflector:
    """Keeps {(namespace, name): transform(object)} in step with the API server.

    `list_fn(**kwargs)` is a kubernetes client list call (e.g. CoreV1Api.list_namespaced_pod bound
    to its namespace). A failed list or watch is reported to `on_error(operation, exc)` and retried
    after `backoff_s`; a watch that expires (410 Gone) lists again. `on_change(obj)` is called after
    each watch event is applied (with the raw object) and after each list (with None). A subclass
    that keeps more than the objects (tombstones, a change counter) overrides `_replace` and `_event`."""

    def __init__(self, name: str, list_fn: Callable[..., Any], transform: Callable[[dict], Any] = lambda o: o,
                 on_error: Callable[[str, Exception], None] = lambda op, exc: None, backoff_s: float = 1.0,
                 watch_timeout_s: int = 60, on_change: Callable[[dict | None], None] | None = None):
        self.name = name
        self._on_change = on_change
        self._list_fn = list_fn
        self._transform = transform
        self._on_error = on_error
        self._backoff_s = backoff_s
        self._watch_timeout_s = watch_timeout_s
        self._items: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"reflector-{name}", daemon=True)

    def start(self) -> "Reflector":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            interrupt_watch(response)
        self._thread.join(timeout=5)

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def get(self, namespace: str, name: str) -> Any:
        with self._lock:
            return self._items.get((namespace, name))

    # ---------------------------------------------------------------- what a subclass may change
    def _replace(self, objects: list[dict]) -> None:
        """A fresh list's objects replace the cache."""
        items = {object_key(o): self._transform(o) for o in objects}
        with self._lock:
            self._items = items

    def _event(self, kind: str, obj: dict) -> None:
        """One watch event (ADDED, MODIFIED or DELETED) applied to the cache."""
        with self._lock:
            if kind == "DELETED":
                self._items.pop(object_key(obj), None)
            else:
                self._items[object_key(obj)] = self._transform(obj)

    def _failed(self, operation: str, exc: Exception) -> None:
        self._on_error(f"{operation} {self.name}", exc)

    def _list_backoff_s(self, failures: int) -> float:
        """Wait before the next list after `failures` failed lists in a row."""
        return self._backoff_s

    def _watching(self) -> None:
        """A watch stream is open: the cache follows the API server from here."""

    # ---------------------------------------------------------------- list then watch
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
            except Exception as exc:  # noqa: BLE001 - any failure is reported and retried
                failures += 1
                self._failed("list", exc)
                self._stop.wait(self._list_backoff_s(failures))
                continue
            failures = 0
            try:
                self._watch_from(version)
            except Exception as exc:  # noqa: BLE001
                if self._stop.is_set():
                    return
                if not (isinstance(exc, kubernetes.client.ApiException) and exc.status == 410):
                    self._failed("watch", exc)
                    self._stop.wait(self._backoff_s)

    def _list(self) -> str:
        response = self._list_fn(_preload_content=False)
        body = json.loads(response.data)
        self._replace(body.get("items", []))
        self.synced.set()
        self._changed(None)
        return body["metadata"]["resourceVersion"]

    def _watch_from(self, version: str) -> None:
        while not self._stop.is_set():
            response = self._list_fn(watch=True, resource_version=version, timeout_seconds=self._watch_timeout_s,
                                     allow_watch_bookmarks=True, _preload_content=False)
            self._response = response
            self._watching()
            try:
                for line in iter_resp_lines(response):
                    if not line or self._stop.is_set():
                        continue
                    version = self._apply(json.loads(line), version)
            finally:
                self._response = None
                response.release_conn()

    def _apply(self, event: dict, version: str) -> str:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            raise kubernetes.client.ApiException(status=obj.get("code"), reason=obj.get("message"))
        version = (obj.get("metadata") or {}).get("resourceVersion", version)
        if kind != "BOOKMARK":
            self._event(kind, obj)
            self._changed(obj)
        return version

    def _changed(self, obj: dict | None) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(obj)
        except Exception as exc:  # noqa: BLE001 - a listener's fault never stops the cache
            self._failed("on_change", exc)


def object_key(obj: dict) -> tuple[str, str]:
    """(namespace, name) of an object as the API server sends it."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def interrupt_watch(response) -> None:
    """Wake the thread blocked reading a watch stream. Closing the response from here would wait
    for that read (the socket's lock) until the watch times out; shutting the socket down ends the
    read at once, and the reading thread releases the connection itself."""
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        response.close()
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
