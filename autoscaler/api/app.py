"""The FastAPI app: autoscalers' state, decisions and forecast; overrides; the audit trail.

Served by the controller on its own port (Kubernetes store, TokenReview/SubjectAccessReview) and by
the local mode (SQLite store, static tokens). Routes are plain `def`: the stores block on I/O, so
Starlette runs them in its thread pool.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autoscaler.api.auth import Auth, User
from autoscaler.api.errors import ERROR_RESPONSES, ApiError, install_error_handlers
from autoscaler.api.schemas import (AuditList, AutoscalerList, AutoscalerOut, DecisionList, DecisionOut,
                                    ForecastOut, ForecastResponse, OverrideCreate, OverrideCreated, OverrideList,
                                    OverrideOut)
from autoscaler.api.status import AutoscalerState, StatusSource
from autoscaler.overrides.errors import FieldError, NotFound, OverrideError, Unavailable
from autoscaler.overrides.model import (AUDIT_PLURAL, AUTOSCALER_PLURAL, DNS_LABEL, PLURAL, AuditEntry,
                                        ScalingOverride, Schedule, idempotency_digest, parse_duration, utc)
from autoscaler.overrides.resolve import active_until
from autoscaler.overrides.store import AuditLog, OverrideStore
from autoscaler.overrides.validate import (DEFAULT_MAX_TTL_S, check_bounds, check_conflicts, check_expiry,
                                           check_fields)

__all__ = ["create_app"]

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

    def user_of(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> User:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)",
                           headers={"WWW-Authenticate": "Bearer"})
        user = auth.authenticate(credentials.credentials)
        if user is None:
            raise ApiError(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
        return user

    def allowed(verb: str, resource: str) -> Callable[..., User]:
        def check(request: Request, user: User = Depends(user_of)) -> User:
            namespace = request.path_params.get("namespace") or request.query_params.get("namespace") or None
            if not auth.authorize(user, verb, resource, namespace):
                where = f"in namespace {namespace!r}" if namespace else "in all namespaces"
                raise ApiError(403, f"user {user.name!r} may not {verb} {resource} {where}")
            return user
        return check

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
    def healthz() -> dict[str, bool]:
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
    @app.get("/v1/overrides", tags=["overrides"], **common)
    def list_overrides(namespace: NamespaceFilter = None, autoscaler: NameFilter = None,
                       active: Annotated[bool | None, Query(description="only those in force now (true) or not")] = None,
                       limit: Limit = 100, continue_: Continue = None,
                       user: User = Depends(allowed("list", PLURAL))) -> OverrideList:
        at = now()
        items = [out(o, at) for o in store.list(namespace, autoscaler)]
        if active is not None:
            items = [o for o in items if o.active is active]
        page, token = _page(items, lambda o: (o.namespace, o.name), limit, continue_)
        return OverrideList(items=page, continue_=token)

    @app.get("/v1/namespaces/{namespace}/overrides/{name}", tags=["overrides"], **common)
    def get_override(namespace: Namespace, name: Name, user: User = Depends(allowed("get", PLURAL))) -> OverrideOut:
        return out(store.get(namespace, name), now())

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
            if key is not None:
                replay = _replay(store, namespace, key, body_hash, idempotency_key, at)
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
            at: datetime) -> OverrideCreated | None:
    found = store.find_idempotent(namespace, key)
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
