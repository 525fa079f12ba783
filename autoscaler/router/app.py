"""The router's HTTP side: an OpenAI-compatible proxy (starlette + aiohttp) in front of each model's engines.

Routes: POST /v1/completions and /v1/chat/completions (streaming passed through as SSE, or not),
GET /v1/models, GET /metrics (ROUTER_* series), GET /health. A request names its model in the
JSON body; the router counts its arrival, picks the least-loaded Ready engine (balance.py) or
holds it while the model has none (hold.py), and passes the engine's answer through unchanged.

The upstream client is aiohttp: with httpx's AsyncClient the same router served 123 requests/s
(64 concurrent clients, an upstream that answers at once; bench/router.py), with aiohttp several
times that.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from autoscaler.router.balance import LoadTracker
from autoscaler.router.endpoints import Endpoint, EndpointSource
from autoscaler.router.hold import HoldQueue, HoldRejected, HoldSettings
from autoscaler.router.metrics import RouterMetrics

__all__ = ["Router", "build_app"]

MAX_BODY_BYTES = 32 * 1024 * 1024
FORWARD_HEADERS = ("content-type", "authorization", "accept")
PASS_BACK_HEADERS = ("content-type", "x-request-id")
MAX_RESENDS = 2     # sends after a connection broke before any answer


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error body."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


def _no_answer(model: str, refused: dict[str, str], broken: list[tuple[str, str]]) -> str:
    parts = []
    if refused:
        parts.append("could not connect to " + ", ".join(f"{e} ({why})" for e, why in sorted(refused.items())))
    if broken:
        parts.append(f"{len(broken)} tries without an answer: " + ", ".join(f"{e} ({why})" for e, why in broken))
    return f"model {model!r}: no engine answered ({'; '.join(parts)})"


class Router:
    """Routing state: the engines' source, load per engine, held requests, metrics, the upstream client.

    Everything but `notify_threadsafe`, `inflight` and the read-only counters runs on the app's event loop.
    `on_hold(model)` is called (on that loop; it must not block) each time a request of `model` starts
    waiting for an engine: the poke that lets local mode decide for that model at once.
    """

    def __init__(self, source: EndpointSource, hold: HoldSettings | None = None, upstream_timeout_s: float = 600.0,
                 max_connections: int = 1000, on_hold: Callable[[str], None] | None = None,
                 connect_timeout_s: float = 10.0):
        self.source = source
        self.loads = LoadTracker()
        self.holds = HoldQueue(hold or HoldSettings(), on_hold=on_hold)
        self.metrics = RouterMetrics()
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                             sock_read=upstream_timeout_s)
        self._max_connections = max_connections
        self._client: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # idle connections are dropped before the engine's server drops them (uvicorn: 5 s), so a request
        # is never sent on a connection the engine is closing (a ServerDisconnectedError, a 502)
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, keepalive_timeout=4)
        self._client = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()

    # ------------------------------------------------------------------ read by the local mode (any thread)
    def inflight(self, endpoint_id: str) -> int:
        return self.loads.inflight(endpoint_id)

    def held(self, model: str) -> int:
        return self.holds.held(model)

    def arrivals_total(self, model: str) -> int:
        return self.metrics.arrivals_total(model)

    def notify_threadsafe(self, model: str | None = None) -> None:
        """Engines changed (from another thread): wake held requests, forget engines no longer listed."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._engines_changed, model)

    def record_scrape_threadsafe(self, endpoint_id: str, running_plus_waiting: float, inflight_at_scrape: int) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.loads.scraped, endpoint_id, running_plus_waiting, inflight_at_scrape)

    def _engines_changed(self, model: str | None) -> None:
        self.holds.notify(model)
        listed = {ep.id for name in self.source.models() for ep in self.source.ready(name)}
        self.loads.forget(listed)

    # ------------------------------------------------------------------ request path
    async def endpoints_for(self, model: str) -> tuple[Sequence[Endpoint], float]:
        """Ready engines for `model`, holding the request while there are none. Raises HoldRejected."""
        endpoints = self.source.ready(model)
        if endpoints:
            return endpoints, 0.0
        self.metrics.held.labels(model).inc()
        try:
            endpoints, held_s = await self.holds.wait(model, lambda: self.source.ready(model))
        except HoldRejected as exc:
            self.metrics.hold_seconds.labels(model).observe(exc.held_s)
            self.metrics.rejected.labels(model).inc()
            raise
        finally:
            self.metrics.held.labels(model).dec()
        self.metrics.hold_seconds.labels(model).observe(held_s)
        return endpoints, held_s

    async def proxy(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body of {len(body)} bytes is over the router's limit of {MAX_BODY_BYTES}",
                          "invalid_request_error")
        try:
            payload = json.loads(body)
            model = payload["model"]
            if not isinstance(model, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, "request body must be a JSON object with a string field 'model'",
                          "invalid_request_error")
        if model not in self.source.models():
            served = ", ".join(self.source.models()) or "none"
            return _error(404, f"model {model!r} is not served here; served: {served}", "NotFoundError")
        self.metrics.arrived(model)
        try:
            endpoints, _ = await self.endpoints_for(model)
        except HoldRejected as exc:
            retry = str(self.holds.settings.retry_after_s)
            return _error(503, f"{exc}; retry after {retry} s", "ServiceUnavailable", headers={"Retry-After": retry})
        headers = {k: v for k, v in request.headers.items() if k in FORWARD_HEADERS}
        return await self._forward(request.url.path, body, headers, bool(payload.get("stream")), model, endpoints)

    async def _forward(self, path: str, body: bytes, headers: dict[str, str], stream: bool, model: str,
                       endpoints: Sequence[Endpoint]) -> Response:
        """Send to the least-loaded engine. An engine that refuses the connection is skipped; a try
        that got no answer is sent again, at most `MAX_RESENDS` times, to an engine not tried yet
        where there is one.

        No answer means the connection broke before the response began (the engine closed a
        kept-alive connection just as the request went out, or reset it while the body was written)
        or was not made in time (a dead host, or this process stalled past the connect timeout on a
        starved machine). The client has seen nothing and the engine drops what it read, so sending
        again is safe.
        """
        refused: dict[str, str] = {}
        broken: list[tuple[str, str]] = []
        while True:
            candidates = [ep for ep in endpoints if ep.id not in refused]
            if not candidates or len(broken) > MAX_RESENDS:
                return _error(502, _no_answer(model, refused, broken), "BadGateway")
            failed = {engine_id for engine_id, _ in broken}
            endpoint = self.loads.choose([ep for ep in candidates if ep.id not in failed] or candidates)
            self.loads.started(endpoint.id)
            try:
                upstream = await self._client.post(endpoint.url + path, data=body, headers=headers)
            except aiohttp.ClientConnectorError as exc:
                self.loads.finished(endpoint.id)
                refused[endpoint.id] = repr(exc)
                endpoints = self.source.ready(model) or endpoints
                continue
            except aiohttp.SocketTimeoutError:
                self.loads.finished(endpoint.id)
                return _error(504, f"model {model!r}: engine {endpoint.id} sent no answer in "
                                   f"{self._timeout.sock_read:g} s", "GatewayTimeout")
            except aiohttp.ClientConnectionError as exc:
                self.loads.finished(endpoint.id)
                broken.append((endpoint.id, type(exc).__name__))
                continue
            except aiohttp.ClientError as exc:
                self.loads.finished(endpoint.id)
                return _error(502, f"model {model!r}: engine {endpoint.id} failed: {exc!r}", "BadGateway")
            return await self._respond(upstream, endpoint, stream)

    async def _respond(self, upstream: aiohttp.ClientResponse, endpoint: Endpoint, stream: bool) -> Response:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASS_BACK_HEADERS}
        if not stream:
            try:
                content = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _error(502, f"engine {endpoint.id} broke off its answer: {exc!r}", "BadGateway")
            finally:
                upstream.release()
                self.loads.finished(endpoint.id)
            return Response(content, status_code=upstream.status, headers=headers)
        return StreamingResponse(self._relay(upstream, endpoint), status_code=upstream.status, headers=headers)

    async def _relay(self, upstream: aiohttp.ClientResponse, endpoint: Endpoint) -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        finally:
            upstream.release()
            self.loads.finished(endpoint.id)

    # ------------------------------------------------------------------ other routes
    def models_body(self) -> dict:
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "warmscale"}
                                           for m in self.source.models()]}


def build_app(router: Router) -> Starlette:
    """The ASGI app; start it with uvicorn (the router starts and stops with the app)."""

    async def completions(request: Request) -> Response:
        return await router.proxy(request)

    async def models(_: Request) -> Response:
        return JSONResponse(router.models_body())

    async def metrics(_: Request) -> Response:
        return Response(router.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(_: Request) -> Response:
        return Response("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    return Starlette(routes=[
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ], lifespan=lifespan)
