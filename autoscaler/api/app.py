"""The FastAPI app: autoscalers' state, decisions and forecast; overrides; the audit trail.

Served by the controller on its own port (Kubernetes store, TokenReview/SubjectAccessReview) and by
the local mode (SQLite store, static tokens). Most routes are plain `def`: the stores block on I/O,
so Starlette runs them in its thread pool. The auth check and the override reads are `async`: what
the caches can answer (the token and decision caches, the encoded response for the store's current
version) is answered on the event loop, a cached read before routing at all (_CachedReads); the
rest is computed on a worker thread.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from autoscaler.api.auth import MISS, Auth, User
from autoscaler.api.errors import ERROR_RESPONSES, ApiError, install_error_handlers
from autoscaler.api.schemas import (AuditList, AutoscalerList, AutoscalerOut, DecisionList, DecisionOut,
                                    ForecastOut, ForecastResponse, OverrideCreate, OverrideCreated, OverrideList,
                                    OverrideOut)
from autoscaler.api.status import AutoscalerState, StatusSource
from autoscaler.overrides.errors import FieldError, NotFound, OverrideError, Unavailable
from autoscaler.overrides.model import (AUDIT_PLURAL, AUTOSCALER_PLURAL, DNS_LABEL, PLURAL, AuditEntry,
                                        ScalingOverride, Schedule, idempotency_digest, parse_duration, utc)
from autoscaler.overrides.resolve import active_until
from autoscaler.overrides.schedule import next_window_start
from autoscaler.overrides.store import AuditLog, OverrideStore
from autoscaler.overrides.validate import (DEFAULT_MAX_TTL_S, check_bounds, check_conflicts, check_expiry,
                                           check_fields)

__all__ = ["create_app"]

RESPONSE_MAX_AGE_S = 10.0       # an encoded response is kept at most this long, whatever the store's version says
RESPONSE_CACHE_SIZE = 512       # responses kept at most
RESPONSE_CACHE_BYTES = 32 << 20  # and bytes of them

Namespace = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
Name = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
NamespaceFilter = Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63, description="all when absent")]
NameFilter = Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Continue = Annotated[str | None, Query(alias="continue", max_length=4096, description="token from the last page")]

_bearer = HTTPBearer(auto_error=False, description="Kubernetes bearer token (or a static token in local mode)")


def create_app(store: OverrideStore, audit: AuditLog, status: StatusSource, auth: Auth,
               clock: Callable[[], float] = time.time, max_ttl_s: float = DEFAULT_MAX_TTL_S,
               title: str = "warmscale") -> FastAPI:
    app = FastAPI(title=f"{title} API", version="v1",
                  description="Autoscalers' state, operators' overrides (pin, bounds, pause, prewarm, schedules) "
                              "and their audit trail.")
    install_error_handlers(app)

    def now() -> datetime:
        return utc(clock())

    async def ask(peek_name: str, method: Callable[..., Any], *args: Any) -> Any:
        """The auth's answer from its cache on the event loop when it has one, else from a worker thread."""
        peek = getattr(auth, peek_name, None)
        if peek is not None:
            found = peek(*args)
            if found is not MISS:
                return found
        return await run_in_threadpool(method, *args)

    def allowed(verb: str, resource: str) -> Callable[..., Any]:
        async def check(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> User:
            if credentials is None or not credentials.credentials:
                raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)",
                               headers={"WWW-Authenticate": "Bearer"})
            user = await ask("peek_authenticate", auth.authenticate, credentials.credentials)
            if user is None:
                raise ApiError(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
            namespace = _authz_namespace(request)
            if not await ask("peek_authorize", auth.authorize, user, verb, resource, namespace):
                where = f"in namespace {namespace!r}" if namespace else "in all namespaces"
                raise ApiError(403, f"user {user.name!r} may not {verb} {resource} {where}")
            return user
        return check

    reads = _ReadCache(auth, getattr(store, "version", None), clock, RESPONSE_CACHE_SIZE, RESPONSE_MAX_AGE_S,
                       RESPONSE_CACHE_BYTES)
    app.add_middleware(_CachedReads, cache=reads)

    async def cached(request: Request, verb: str, resource: str,
                     compute: Callable[[datetime], tuple[bytes, float]]) -> Response:
        """The encoded response for this path and query: kept while the store's version is the same
        and no override in it changes state (expires, a window opens or closes); else computed on a
        worker thread. A later request for it that the auth's caches can clear is answered by
        _CachedReads before routing (see there)."""
        version = reads.version()
        t = clock()
        key = (request.scope["path"], request.scope["query_string"])
        if version is not None:
            body = reads.body(key, version, t)
            if body is not None:
                return Response(body, media_type="application/json")
        body, until = await run_in_threadpool(compute, utc(t))
        if version is not None:
            reads.put(key, version, t, until, body, (verb, resource, _authz_namespace(request)))
        return Response(body, media_type="application/json")

    def known_autoscaler(namespace: str, name: str, field: str) -> AutoscalerState:
        state = status.get_autoscaler(namespace, name)
        if state is None:
            raise FieldError(f"autoscaler {namespace}/{name} does not exist", field, name)
        return state

    def out(override: ScalingOverride, at: datetime) -> OverrideOut:
        try:
            until = active_until(override, at)
        except ValueError:
            until = None
        return OverrideOut.of(override, until)

    common: dict[str, Any] = {"responses": ERROR_RESPONSES}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    # ------------------------------------------------------------------ autoscalers
    @app.get("/v1/autoscalers", tags=["autoscalers"], **common)
    def list_autoscalers(namespace: NamespaceFilter = None, limit: Limit = 100, continue_: Continue = None,
                         user: User = Depends(allowed("list", AUTOSCALER_PLURAL))) -> AutoscalerList:
        states = [s for s in status.list_autoscalers() if namespace is None or s.namespace == namespace]
        page, token = _page(states, lambda s: (s.namespace, s.name), limit, continue_)
        return AutoscalerList(items=[AutoscalerOut(**_state_dict(s)) for s in page], continue_=token)

    @app.get("/v1/namespaces/{namespace}/autoscalers/{name}", tags=["autoscalers"], **common)
    def get_autoscaler(namespace: Namespace, name: Name,
                       user: User = Depends(allowed("get", AUTOSCALER_PLURAL))) -> AutoscalerOut:
        state = status.get_autoscaler(namespace, name)
        if state is None:
            raise NotFound(f"autoscaler {namespace}/{name} does not exist", "name", name)
        return AutoscalerOut(**_state_dict(state))

    @app.get("/v1/namespaces/{namespace}/autoscalers/{name}/decisions", tags=["autoscalers"], **common)
    def recent_decisions(namespace: Namespace, name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                         user: User = Depends(allowed("get", AUTOSCALER_PLURAL))) -> DecisionList:
        if status.get_autoscaler(namespace, name) is None:
            raise NotFound(f"autoscaler {namespace}/{name} does not exist", "name", name)
        return DecisionList(items=[DecisionOut.of(d) for d in status.recent_decisions(namespace, name, limit)])

    @app.get("/v1/namespaces/{namespace}/autoscalers/{name}/forecast", tags=["autoscalers"], **common)
    def current_forecast(namespace: Namespace, name: Name,
                         user: User = Depends(allowed("get", AUTOSCALER_PLURAL))) -> ForecastResponse:
        if status.get_autoscaler(namespace, name) is None:
            raise NotFound(f"autoscaler {namespace}/{name} does not exist", "name", name)
        forecast = status.forecast(namespace, name)
        return ForecastResponse(forecast=ForecastOut.of(forecast) if forecast else None)

    # ------------------------------------------------------------------ overrides
    @app.get("/v1/overrides", tags=["overrides"], response_model=OverrideList, **common)
    async def list_overrides(request: Request, namespace: NamespaceFilter = None, autoscaler: NameFilter = None,
                             active: Annotated[bool | None,
                                               Query(description="only those in force now (true) or not")] = None,
                             limit: Limit = 100, continue_: Continue = None,
                             user: User = Depends(allowed("list", PLURAL))) -> Response:
        def compute(at: datetime) -> tuple[bytes, float]:
            overrides = store.list(namespace, autoscaler)
            items = [out(o, at) for o in overrides]
            if active is not None:
                items = [o for o in items if o.active is active]
            page, token = _page(items, lambda o: (o.namespace, o.name), limit, continue_)
            return _json(OverrideList(items=page, continue_=token)), _stable_until(overrides, at, RESPONSE_MAX_AGE_S)
        return await cached(request, "list", PLURAL, compute)

    @app.get("/v1/namespaces/{namespace}/overrides/{name}", tags=["overrides"], response_model=OverrideOut, **common)
    async def get_override(request: Request, namespace: Namespace, name: Name,
                           user: User = Depends(allowed("get", PLURAL))) -> Response:
        def compute(at: datetime) -> tuple[bytes, float]:
            override = store.get(namespace, name)
            return _json(out(override, at)), _stable_until([override], at, RESPONSE_MAX_AGE_S)
        return await cached(request, "get", PLURAL, compute)

    @app.post("/v1/namespaces/{namespace}/overrides", tags=["overrides"], status_code=201, **common)
    def create_override(namespace: Namespace, body: OverrideCreate, response: Response,
                        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
                        user: User = Depends(allowed("create", PLURAL))) -> OverrideCreated:
        body_hash = hashlib.sha256(f"{namespace}\0{body.model_dump_json()}".encode()).hexdigest()
        key = idempotency_digest(user.name, idempotency_key) if idempotency_key else None
        if key is not None:
            replay = _replay(store, namespace, key, body_hash, idempotency_key, now())
            if replay is not None:
                response.status_code = 201
                return replay
        at = now()
        state = known_autoscaler(namespace, body.target, "target")
        override = _new_override(namespace, body, user, at, key)
        check_fields(override)
        check_bounds(override, state.min_replicas, state.max_replicas)
        _check_expiry(override, body, at, max_ttl_s)
        warnings = check_conflicts(override, store.list(namespace, body.target), at)
        try:
            created = store.create(override, key, body_hash)
        except OverrideError:
            if key is not None:   # another request with this key made it meanwhile: read the store itself
                replay = _replay(store, namespace, key, body_hash, idempotency_key, at, fresh=True)
                if replay is not None:
                    return replay
            raise
        _audit_or_undo(audit, AuditEntry(time=at, actor=user.name, action="create", namespace=namespace,
                                         override=created.name, target=created.target, current=created.summary()),
                       undo=lambda: store.delete(namespace, created.name, uid=created.uid or None))
        return OverrideCreated(override=out(created, at), warnings=warnings)

    @app.delete("/v1/namespaces/{namespace}/overrides/{name}", tags=["overrides"], **common)
    def delete_override(namespace: Namespace, name: Name,
                        user: User = Depends(allowed("delete", PLURAL))) -> OverrideOut:
        at = now()
        existing = store.get(namespace, name)
        entry = audit.record(AuditEntry(time=at, actor=user.name, action="delete", namespace=namespace,
                                        override=name, target=existing.target, previous=existing.summary()))
        try:
            store.delete(namespace, name, uid=existing.uid or None)
        except OverrideError:
            audit.remove(entry.id)
            raise
        return out(existing, at)

    # ------------------------------------------------------------------ audit
    @app.get("/v1/audit", tags=["audit"], **common)
    def query_audit(namespace: NamespaceFilter = None, autoscaler: NameFilter = None, override: NameFilter = None,
                    limit: Limit = 100, continue_: Continue = None,
                    user: User = Depends(allowed("list", AUDIT_PLURAL))) -> AuditList:
        entries, token = audit.query(namespace, autoscaler, override, limit, continue_)
        return AuditList(items=entries, continue_=token)

    return app


def _authz_namespace(request: Request) -> str | None:
    """The namespace a request is authorised in (None: all namespaces)."""
    return request.path_params.get("namespace") or request.query_params.get("namespace") or None


class _ReadCache:
    """Encoded read responses keyed by (path, raw query string), each kept for one store version and
    the span of the clock it is right for, with what the request had to be allowed to do (verb,
    resource, namespace). Bounded in count and bytes: the least recently used go first."""

    def __init__(self, auth: Auth, version: Callable[[], Hashable | None] | None, clock: Callable[[], float],
                 size: int, max_age_s: float, max_bytes: int) -> None:
        self.auth, self._version, self.clock = auth, version, clock
        self.size, self.max_age_s, self.max_bytes = size, max_age_s, max_bytes
        self.bytes = 0
        self._data: OrderedDict[tuple, tuple[Hashable, float, float, bytes, tuple]] = OrderedDict()
        self._lock = threading.Lock()
        self._peek_authenticate = getattr(auth, "peek_authenticate", None)
        self._peek_authorize = getattr(auth, "peek_authorize", None)

    def version(self) -> Hashable | None:
        if self._version is None:
            return None
        try:
            return self._version()
        except Exception:  # noqa: BLE001 - no version, no cache: the store is read (and reports its own errors)
            return None

    def _entry(self, key: tuple, version: Hashable, now: float) -> tuple | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] != version or not hit[1] <= now < hit[2]:
                return None
            self._data.move_to_end(key)
            return hit

    def body(self, key: tuple, version: Hashable, now: float) -> bytes | None:
        hit = self._entry(key, version, now)
        return None if hit is None else hit[3]

    def put(self, key: tuple, version: Hashable, start: float, until: float, body: bytes,
            needs: tuple[str, str, str | None]) -> None:
        until = min(until, start + self.max_age_s)
        if until <= start or len(body) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= len(old[3])
            self._data[key] = (version, start, until, body, needs)
            self.bytes += len(body)
            while len(self._data) > self.size or self.bytes > self.max_bytes:
                self.bytes -= len(self._data.popitem(last=False)[1][3])

    def serve(self, scope: dict) -> bytes | None:
        """The body for this GET if it is cached and right now, and the caller's token and right to it
        are in the auth's caches; None otherwise (the request then takes the full route, which gives
        the 401 or 403, asks the API server, or reads the store)."""
        if self._peek_authenticate is None or self._peek_authorize is None:
            return None
        key = (scope["path"], scope["query_string"])
        if key not in self._data:
            return None
        version = self.version()
        if version is None:
            return None
        hit = self._entry(key, version, self.clock())
        if hit is None:
            return None
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if authorization is None:
            return None
        scheme, token = get_authorization_scheme_param(authorization.decode("latin-1"))
        if scheme.lower() != "bearer" or not token:
            return None
        user = self._peek_authenticate(token)
        if user is None or user is MISS:
            return None
        verb, resource, namespace = hit[4]
        allowed = self._peek_authorize(user, verb, resource, namespace)
        if allowed is MISS or not allowed:
            return None
        return hit[3]


class _CachedReads:
    """ASGI middleware: answers a GET that _ReadCache can serve before routing, so a cached read
    costs no dependency solving, no parameter validation and no worker thread."""

    def __init__(self, app: Any, cache: _ReadCache) -> None:
        self.app, self.cache = app, cache

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self.cache.serve(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _json(model: Any) -> bytes:
    """The body FastAPI would send for `model` as the response model (JSON mode, by alias)."""
    return model.model_dump_json(by_alias=True).encode()


def _stable_until(overrides: Sequence[ScalingOverride], at: datetime, max_age_s: float) -> float:
    """Epoch seconds until which no override's state as the API shows it (active, active_until) can
    change: the earliest expiry, schedule fire time or window end after `at` (at most max_age_s on)."""
    until = at.timestamp() + max_age_s
    for override in overrides:
        if override.expires_at <= at:
            continue                        # expired: stays inactive
        until = min(until, override.expires_at.timestamp())
        if override.schedule is None:
            continue
        try:
            fire = next_window_start(override.schedule, at)
            window_end = active_until(override, at)
        except ValueError:
            continue                        # cannot be evaluated at any time: shown inactive throughout
        if fire is not None:
            until = min(until, fire.timestamp())
        if window_end is not None:
            until = min(until, window_end.timestamp())
    return until if math.isfinite(until) else at.timestamp()


def _state_dict(state: AutoscalerState) -> dict[str, Any]:
    return {f: getattr(state, f) for f in AutoscalerState.__slots__}


def _new_override(namespace: str, body: OverrideCreate, user: User, at: datetime, key: str | None) -> ScalingOverride:
    expires = _expiry(body, at)
    schedule = None
    if body.schedule is not None:
        try:
            span = parse_duration(body.schedule.duration)
        except ValueError as err:
            raise FieldError(str(err), "schedule.duration", body.schedule.duration) from None
        schedule = Schedule(cron=body.schedule.cron, time_zone=body.schedule.time_zone, duration_s=span)
    suffix = key[:6] if key else uuid.uuid4().hex[:6]
    name = body.name or f"{body.target[:40].rstrip('-')}-{body.kind.value.replace('_', '')}-{suffix}"
    return ScalingOverride(namespace=namespace, name=name, target=body.target, kind=body.kind, replicas=body.replicas,
                           min_replicas=body.min_replicas, max_replicas=body.max_replicas, expires_at=expires,
                           reason=body.reason, author=user.name, schedule=schedule, created_at=at)


def _expiry(body: OverrideCreate, at: datetime) -> datetime:
    if (body.duration is None) == (body.expires_at is None):
        raise FieldError("give exactly one of duration and expires_at", "duration", body.duration)
    if body.expires_at is not None:
        return utc(body.expires_at)
    try:
        return at + timedelta(seconds=parse_duration(body.duration))
    except (ValueError, OverflowError) as err:
        raise FieldError(str(err), "duration", body.duration) from None


def _check_expiry(override: ScalingOverride, body: OverrideCreate, at: datetime, max_ttl_s: float) -> None:
    try:
        check_expiry(override, at, max_ttl_s)
    except FieldError as err:
        if body.duration is not None and err.field == "expires_at":
            raise FieldError(err.message, "duration", body.duration) from None
        raise


def _replay(store: OverrideStore, namespace: str, key: str, body_hash: str, raw_key: str,
            at: datetime, fresh: bool = False) -> OverrideCreated | None:
    found = store.find_idempotent(namespace, key, fresh=fresh) if fresh else store.find_idempotent(namespace, key)
    if found is None:
        return None
    override, stored_hash = found
    if stored_hash != body_hash:
        from autoscaler.overrides.errors import Conflict
        raise Conflict(f"Idempotency-Key {raw_key!r} was used for a different request (override "
                       f"{override.namespace}/{override.name})", "Idempotency-Key", raw_key)
    try:
        until = active_until(override, at)
    except ValueError:
        until = None
    return OverrideCreated(override=OverrideOut.of(override, until), replayed=True)


def _audit_or_undo(audit: AuditLog, entry: AuditEntry, undo: Callable[[], None]) -> None:
    """Write the audit entry; if it cannot be written, take the change back (nothing half-written)."""
    try:
        audit.record(entry)
    except OverrideError as err:
        try:
            undo()
        except OverrideError:
            pass
        raise Unavailable(f"the change was not made: its audit record could not be written ({err.message})") from None


def _page(items: Sequence, key: Callable[[Any], tuple[str, str]], limit: int,
          token: str | None) -> tuple[list, str | None]:
    """Keyset pagination over items sorted by `key`: the token is the last key of the page."""
    ordered = sorted(items, key=key)
    if token:
        after = _decode_token(token)
        ordered = [i for i in ordered if key(i) > after]
    page = ordered[:limit]
    next_token = _encode_token(key(page[-1])) if len(ordered) > limit else None
    return page, next_token


def _encode_token(last: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(last)).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return value[0], value[1]
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise FieldError(f"continue token {token!r} was not issued by this server", "continue", token)
