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

__all__ = ["PodRef", "PodResolver", "PodIPResolver", "MappingResolver", "TemplateResolver", "check_url_template",
           "url_host"]

_POD_FIELDS = {"name": "n", "namespace": "ns", "ip": "10.0.0.1"}


def url_host(ip: str) -> str:
    """An IP as the host part of a URL (IPv6 in brackets)."""
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


def check_url_template(template: str, what: str, fields: Mapping[str, object] = _POD_FIELDS) -> str:
    """`template` if it can be filled with `fields` and is an http(s) URL; else ValueError naming `what` is wrong."""
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        names = [f"{{{f}}}" for f in fields]
        raise ValueError(f"{what} {template!r}: only {', '.join(names[:-1])} and {names[-1]} may appear ({exc})") from None
    if not template.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://, got {template!r}")
    return template


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
        return f"{self.scheme}://{url_host(pod.ip)}:{self.port}{self.path}"


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
        check_url_template(self.template, "metrics URL template")

    def metrics_url(self, pod: PodRef) -> str | None:
        if "{ip}" in self.template and not pod.ip:
            return None
        return self.template.format(name=pod.name, namespace=pod.namespace, ip=pod.ip or "")
