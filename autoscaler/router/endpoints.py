"""Where the router sends a model's requests: engines discovered through a small interface.

The router asks its `EndpointSource` for the engines that may take a model's requests now, on
every request (a dict lookup). Three sources exist:

- `StaticEndpoints`: a fixed `{model: [url, ...]}` map (tests, benchmarks, a router in front of
  engines someone else runs).
- the local supervisor (`autoscaler.local`), which lists its Ready engines and drops a draining
  one before it stops it.
- `kube.ClusterEndpoints`, in a cluster: the Ready pods of each ModelAutoscaler's selector.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Endpoint", "EndpointSource", "StaticEndpoints"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One engine: `id` names it in metrics and load tracking; `url` is its base URL (no /v1)."""

    id: str
    url: str


@runtime_checkable
class EndpointSource(Protocol):
    def models(self) -> Sequence[str]:
        """Every model the router serves (listed by /v1/models), with or without engines now."""

    def ready(self, model: str) -> Sequence[Endpoint]:
        """Engines that may take `model`'s requests now (Ready, not draining)."""


class StaticEndpoints:
    """A fixed map from model to engine URLs; `set()` replaces a model's list (thread-safe)."""

    def __init__(self, endpoints: Mapping[str, Iterable[str]] | None = None):
        self._lock = threading.Lock()
        self._by_model: dict[str, tuple[Endpoint, ...]] = {}
        for model, urls in (endpoints or {}).items():
            self.set(model, urls)

    def set(self, model: str, urls: Iterable[str]) -> None:
        eps = tuple(Endpoint(f"{model}/{i}", url.rstrip("/")) for i, url in enumerate(urls))
        with self._lock:
            self._by_model[model] = eps

    def models(self) -> Sequence[str]:
        with self._lock:
            return tuple(self._by_model)

    def ready(self, model: str) -> Sequence[Endpoint]:
        with self._lock:
            return self._by_model.get(model, ())
