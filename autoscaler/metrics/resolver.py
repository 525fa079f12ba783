"""Where to scrape a pod's `/metrics`: a `PodResolver` turns a pod into a URL.

In a real cluster the engine listens on the pod's IP (`PodIPResolver`). On the test ground the
kwok pods run no engine and their addresses must never be dialled: the fleet emulator's resolver
(`autoscaler.sim.emulator`) or a `MappingResolver` sends the scrape to loopback instead.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["PodRef", "PodResolver", "PodIPResolver", "MappingResolver", "TemplateResolver"]


@dataclass(frozen=True, slots=True)
class PodRef:
    """The facts about a pod a resolver may use (read from the API server)."""

    name: str
    namespace: str = "default"
    ip: str | None = None


@runtime_checkable
class PodResolver(Protocol):
    def metrics_url(self, pod: PodRef) -> str | None:
        """The URL of `pod`'s metrics, or None when it has none (yet)."""


@dataclass(frozen=True)
class PodIPResolver:
    """Real clusters: http://<pod IP>:<port><path>."""

    port: int = 8000
    path: str = "/metrics"
    scheme: str = "http"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"metrics port must be 1..65535, got {self.port!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"metrics path must start with '/', got {self.path!r}")

    def metrics_url(self, pod: PodRef) -> str | None:
        if not pod.ip:
            return None
        host = f"[{pod.ip}]" if ipaddress.ip_address(pod.ip).version == 6 else pod.ip
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class MappingResolver:
    """A fixed pod name -> URL table (a real engine on loopback standing in for a pod)."""

    urls: Mapping[str, str]

    def metrics_url(self, pod: PodRef) -> str | None:
        return self.urls.get(pod.name)


@dataclass(frozen=True)
class TemplateResolver:
    """A URL template with {name}, {namespace} and {ip}, e.g. the emulator's
    'http://127.0.0.1:9400/pods/{namespace}/{name}/metrics'. A template using {ip} gives None for a
    pod without one."""

    template: str

    def __post_init__(self) -> None:
        try:
            self.template.format(name="n", namespace="ns", ip="i")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"metrics URL template {self.template!r}: only {{name}}, {{namespace}} and {{ip}} "
                             f"may appear ({exc})") from None
        if not self.template.startswith(("http://", "https://")):
            raise ValueError(f"metrics URL template must start with http:// or https://, got {self.template!r}")

    def metrics_url(self, pod: PodRef) -> str | None:
        if "{ip}" in self.template and not pod.ip:
            return None
        return self.template.format(name=pod.name, namespace=pod.namespace, ip=pod.ip or "")
