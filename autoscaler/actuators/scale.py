"""Read and write the scale subresource of any object that has one (Deployment, StatefulSet, an
operator's own custom resource), with the object's resourceVersion and retries on conflict."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import kubernetes

__all__ = ["ScaleRef", "Scale", "ScaleClient", "ScaleTargetError"]

_JSON = {"Accept": "application/json", "Content-Type": "application/json"}


class ScaleTargetError(Exception):
    """The scale target cannot be resolved (unknown kind, no scale subresource)."""


@dataclass(frozen=True, slots=True)
class ScaleRef:
    api_version: str
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class Scale:
    replicas: int
    status_replicas: int
    resource_version: str


class ScaleClient:
    def __init__(self, api_client: kubernetes.client.ApiClient, conflict_retries: int = 3):
        self.api = api_client
        self.conflict_retries = conflict_retries
        self._plurals: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _path(self, ref: ScaleRef) -> str:
        base = f"/api/{ref.api_version}" if "/" not in ref.api_version else f"/apis/{ref.api_version}"
        return f"{base}/namespaces/{ref.namespace}/{self._plural(ref)}/{ref.name}/scale"

    def _plural(self, ref: ScaleRef) -> str:
        """The resource name of `ref.kind` with a scale subresource, from API discovery (cached)."""
        key = (ref.api_version, ref.kind)
        with self._lock:
            if key in self._plurals:
                return self._plurals[key]
        base = f"/api/{ref.api_version}" if "/" not in ref.api_version else f"/apis/{ref.api_version}"
        try:
            found = self._call(base, "GET")
        except kubernetes.client.ApiException as exc:
            raise ScaleTargetError(f"scaleTargetRef.apiVersion {ref.api_version!r}: API discovery failed ({exc.status} {exc.reason})") from exc
        names = {r["name"] for r in found.get("resources", [])}
        plural = next((r["name"] for r in found.get("resources", []) if r.get("kind") == ref.kind and "/" not in r["name"]), None)
        if plural is None:
            raise ScaleTargetError(f"scaleTargetRef.kind {ref.kind!r}: no such kind in {ref.api_version}")
        if f"{plural}/scale" not in names:
            raise ScaleTargetError(f"scaleTargetRef.kind {ref.kind!r}: {plural} has no scale subresource")
        with self._lock:
            self._plurals[key] = plural
        return plural

    def _call(self, path: str, method: str, body: dict | None = None) -> dict:
        _, url, headers, data, _ = self.api.param_serialize(method, path, header_params=dict(_JSON), body=body,
                                                            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=data)
        response.read()
        if not 200 <= response.status <= 299:
            raise kubernetes.client.ApiException(http_resp=response)
        return json.loads(response.data)

    def read(self, ref: ScaleRef) -> Scale:
        return _scale(self._call(self._path(ref), "GET"))

    def write(self, ref: ScaleRef, replicas: int, current: Scale | None = None) -> Scale:
        """Set spec.replicas, carrying the resourceVersion of `current` (read when None). On a conflict
        it reads again and retries; if someone already set the same count it writes nothing."""
        path = self._path(ref)
        scale = current or self.read(ref)
        for attempt in range(self.conflict_retries + 1):
            if scale.replicas == replicas:
                return scale
            body = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": ref.name, "namespace": ref.namespace, "resourceVersion": scale.resource_version},
                    "spec": {"replicas": replicas}}
            try:
                return _scale(self._call(path, "PUT", body))
            except kubernetes.client.ApiException as exc:
                if exc.status != 409 or attempt == self.conflict_retries:
                    raise
                scale = self.read(ref)
        raise AssertionError("unreachable")


def _scale(obj: dict) -> Scale:
    return Scale(replicas=int(obj.get("spec", {}).get("replicas") or 0),
                 status_replicas=int(obj.get("status", {}).get("replicas") or 0),
                 resource_version=obj["metadata"]["resourceVersion"])
