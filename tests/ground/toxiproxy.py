"""A fault-injecting TCP proxy (toxiproxy) in front of a server of the test ground.

Toxics act per connection: each connection through a proxy draws its own copy of every toxic, a
toxic with ``toxicity`` p applies to a share p of the connections. What object storage looks like
from one client is built from three of them (``shape_like_object_storage``): a bandwidth cap per
connection, a first-byte latency, and optionally stalls or slow connections on a share of them.
"""
from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.ground.binaries import cache_dir, versions
from tests.ground.procs import ManagedProcess, free_port, require_executable


def toxiproxy_binary() -> str:
    """The cached toxiproxy-server, or an error that says how to build it."""
    version = versions()["TOXIPROXY_VERSION"]
    path = cache_dir() / "bin" / f"toxiproxy-server-{version}" / "toxiproxy-server"
    return require_executable(path, "build the test ground's binaries: bash hack/build-binaries.sh")


@dataclass(frozen=True)
class Shape:
    """Per-connection behaviour of the proxied store."""

    rate_kb_s: int  # bandwidth cap of one connection, KB/s (toxiproxy's unit: 1000 bytes)
    latency_ms: int  # added before the response's first byte (each chunk is held this long)
    stall_share: float = 0.0  # share of connections whose responses wait another stall_ms
    stall_ms: int = 0
    slow_share: float = 0.0  # share of connections capped at slow_rate_kb_s instead
    slow_rate_kb_s: int = 0


@dataclass
class Toxiproxy:
    api_url: str
    proxies: dict[str, str] = field(default_factory=dict)  # name -> listen address

    def _call(self, method: str, path: str, body: dict | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def proxy(self, name: str, upstream: str) -> str:
        """Listen on a free loopback port and forward to ``upstream`` (host:port); returns host:port."""
        listen = f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        self.proxies[name] = listen
        return listen

    def add_toxic(self, proxy: str, name: str, kind: str, attributes: dict, *, toxicity: float = 1.0,
                  stream: str = "downstream") -> None:
        self._call("POST", f"/proxies/{proxy}/toxics",
                   {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes})

    def clear_toxics(self, proxy: str) -> None:
        for toxic in self._call("GET", f"/proxies/{proxy}/toxics") or []:  # type: ignore[union-attr]
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")

    def shape(self, proxy: str, shape: Shape) -> None:
        """Replace the proxy's toxics with ``shape`` (affects connections opened from now on)."""
        self.clear_toxics(proxy)
        # Toxics chain and each connection draws each one: every connection gets the cap, a share of
        # them the slower one too (two exclusive draws could leave a connection uncapped).
        self.add_toxic(proxy, "rate", "bandwidth", {"rate": shape.rate_kb_s})
        if shape.slow_share:
            self.add_toxic(proxy, "slow", "bandwidth", {"rate": shape.slow_rate_kb_s}, toxicity=shape.slow_share)
        self.add_toxic(proxy, "first_byte", "latency", {"latency": shape.latency_ms, "jitter": 0})
        if shape.stall_share:
            self.add_toxic(proxy, "stall", "latency", {"latency": shape.stall_ms, "jitter": 0},
                           toxicity=shape.stall_share)


@contextlib.contextmanager
def start_toxiproxy(workdir: Path) -> Iterator[Toxiproxy]:
    """Start toxiproxy-server with its API on a free loopback port."""
    port = free_port()
    argv = [toxiproxy_binary(), "-host", "127.0.0.1", "-port", str(port)]
    workdir.mkdir(parents=True, exist_ok=True)
    with ManagedProcess("toxiproxy", argv, workdir / "logs", ports=[port]) as proc:
        server = Toxiproxy(f"http://127.0.0.1:{port}")
        proc.wait_until(lambda: server._call("GET", "/proxies") is not None, timeout_s=30,
                        how_to_fix="run toxiproxy-server by hand with the command above to see why it fails")
        yield server
