"""Real S3 server, injected faults: a small loopback HTTP proxy in front of versitygw answers some
ranged GETs with 503 SlowDown, resets the connection halfway through a body, or stalls."""

from __future__ import annotations

import collections
import http.client
import http.server
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from safetensors.torch import load_file, save_file

from loader.config import LoaderConfig
from loader.errors import RetriesExhaustedError
from loader.stream import LoadReport, load_checkpoint, stream_checkpoint

pytestmark = pytest.mark.integration

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    """Forwards every request to ``upstream``; ranged GETs take the next queued fault, if any."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.faults: collections.deque[str] = collections.deque()
        self.injected: collections.Counter[str] = collections.Counter()
        self.ranged_gets = 0
        self.slow_tail_over = threading.Event()  # sent in full, or cut off by the client
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_HEAD(self) -> None:
                proxy.forward(self)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # resets are on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def inject(self, *faults: str) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _next_fault(self, handler: http.server.BaseHTTPRequestHandler) -> str | None:
        if handler.command != "GET" or "Range" not in handler.headers:
            return None
        with self._lock:
            self.ranged_gets += 1
            fault = self.faults.popleft() if self.faults else None
            if fault and fault != "pass":
                self.injected[fault] += 1
            return None if fault == "pass" else fault

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        fault = self._next_fault(handler)
        handler.close_connection = True
        if fault == "slowdown":
            handler.send_response(503, "Slow Down")
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(SLOWDOWN_BODY)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(SLOWDOWN_BODY)
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        upstream.request(handler.command, handler.path, headers=dict(handler.headers.items()))
        resp = upstream.getresponse()
        body = resp.read()
        handler.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body) if handler.command == "GET" else resp.getheader("Content-Length", "0")))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if fault == "stall":
            time.sleep(8)
        if fault == "slowtail":
            quarter = len(body) // 4
            try:
                self._trickle(handler, body)
            finally:
                self.slow_tail_over.set()
            return
        if fault == "reset":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            sock: socket.socket = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            sock.close()
            return
        handler.wfile.write(body)

    @staticmethod
    def _trickle(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        """A quarter at once, then the rest well after a pause, unless the client hangs up first."""
        quarter = len(body) // 4
        try:
            handler.wfile.write(body[:quarter])
            handler.wfile.flush()
            time.sleep(1.0)
            step = -(-(len(body) - quarter) // 16)
            for start in range(quarter, len(body), step):
                handler.wfile.write(body[start:start + step])
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass  # the loader aborted the request the hedge beat

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def proxy(s3_server) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_server.endpoint_url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def model(s3_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    directory = tmp_path_factory.mktemp("faulty")
    g = torch.Generator().manual_seed(7)
    save_file({f"layer{i}.weight": torch.randn(256, 256, generator=g) for i in range(8)}, directory / "model.safetensors")
    s3_server.client().upload_file(str(directory / "model.safetensors"), s3_server.bucket, "faults/model.safetensors")
    return f"s3://{s3_server.bucket}/faults", directory / "model.safetensors"


@pytest.fixture(autouse=True)
def creds(s3_server, monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    proxy.faults.clear()
    proxy.injected.clear()
    proxy.slow_tail_over.clear()


def _config(proxy: FaultProxy, **overrides: object) -> LoaderConfig:
    values = {"endpoint_url": proxy.url, "range_bytes": 256 * 1024, "memory_limit_bytes": 2 << 20,
              "concurrency": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    values.update(overrides)
    return LoaderConfig(**values)


def _same(got: dict[str, torch.Tensor], path: Path) -> bool:
    want = load_file(path)
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_clean_load_through_the_proxy(proxy: FaultProxy, model: tuple[str, Path]) -> None:
    location, path = model
    assert _same(load_checkpoint(location, "cpu", _config(proxy)), path)
    assert proxy.ranged_gets > 8


def test_503_slowdown_is_retried(proxy: FaultProxy, model: tuple[str, Path]) -> None:
    location, path = model
    proxy.inject("pass", "slowdown", "slowdown", "pass", "slowdown")
    report = LoadReport(location=location)
    assert _same(load_checkpoint(location, "cpu", _config(proxy), report=report), path)
    assert proxy.injected["slowdown"] == 3 and report.fetch.retries == 3


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_connection_reset_mid_range_resumes(proxy: FaultProxy, model: tuple[str, Path], direct: bool) -> None:
    location, path = model
    proxy.inject("pass", "reset", "pass", "reset")
    report = LoadReport(location=location)
    assert _same(load_checkpoint(location, "cpu", _config(proxy, direct_host_reads=direct), report=report), path)
    assert proxy.injected["reset"] == 2 and report.fetch.retries == 2


def test_persistent_throttling_fails_cleanly(proxy: FaultProxy, model: tuple[str, Path]) -> None:
    location, _ = model
    proxy.inject("pass", *["slowdown"] * 50)
    received: list[str] = []
    with pytest.raises(RetriesExhaustedError, match="SlowDown"):
        for name, _tensor in stream_checkpoint(
            location, "cpu", _config(proxy, max_attempts=3, concurrency=1)
        ):
            received.append(name)
    assert len(received) < 8


def test_stalled_range_is_hedged(proxy: FaultProxy, model: tuple[str, Path]) -> None:
    location, path = model
    proxy.inject(*["pass"] * 6, "stall")
    report = LoadReport(location=location)
    started = time.monotonic()
    got = load_checkpoint(location, "cpu", _config(proxy, hedge_min_s=0.2, hedge_factor=3.0), report=report)
    assert time.monotonic() - started < 6
    assert _same(got, path)
    assert report.fetch.hedge_wins >= 1


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_losing_hedge_request_never_writes_into_handed_over_tensors(
    proxy: FaultProxy, model: tuple[str, Path], direct: bool
) -> None:
    """A consumer that edits each tensor in place as soon as it arrives (as vLLM's weight post-processing
    does) keeps its edits, whether the slow request the hedge beat is cut off or goes on delivering bytes."""
    location, _ = model
    proxy.inject(*["pass"] * 6, "slowtail")
    report = LoadReport(location=location)
    kept: dict[str, torch.Tensor] = {}
    config = _config(proxy, hedge_min_s=0.2, hedge_factor=3.0, direct_host_reads=direct)
    for name, tensor in stream_checkpoint(location, "cpu", config, report=report):
        tensor.fill_(-7.0)
        kept[name] = tensor
    assert report.fetch.hedge_wins >= 1 and proxy.injected["slowtail"] == 1
    assert proxy.slow_tail_over.wait(10)
    time.sleep(0.3)  # let any late reads of the losing request land
    assert len(kept) == 8
    assert all(bool((t == -7.0).all()) for t in kept.values()), "a losing request overwrote handed-over bytes"
