"""Every error the API returns has one shape: {"error": {status, code, message, field, value}}."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autoscaler.api.schemas import ErrorBody
from autoscaler.overrides.errors import Conflict, FieldError, NotFound, OverrideError, Unavailable

__all__ = ["ApiError", "ERROR_RESPONSES", "install_error_handlers", "error_response"]

_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 422: "invalid_field", 503: "unavailable"}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": _CODES[status].replace("_", " ")}
    for status in (400, 401, 403, 404, 409, 422, 503)
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, value: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.value, self.headers = status, message, field, value, headers


def error_response(status: int, message: str, field: str | None = None, value: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"status": status, "code": _CODES.get(status, "error"), "message": message,
                      "field": field, "value": jsonable_encoder(value)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _from_override_error(err: OverrideError) -> JSONResponse:
    if isinstance(err, Unavailable):
        return error_response(503, err.message, headers={"Retry-After": str(err.retry_after_s)})
    status = {FieldError: 422, NotFound: 404, Conflict: 409}.get(type(err), 503)
    return error_response(status, err.message, err.field, err.value)


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _from_validation(err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0]
    field = _field_name(first.get("loc", ()))
    value = first.get("input")
    if not isinstance(value, (str, int, float, bool)) or first.get("type") == "missing":
        value = None
    return error_response(422, f"{field}: {first.get('msg', 'invalid')}", field, value)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.field, err.value, err.headers)

    @app.exception_handler(OverrideError)
    async def _override_error(request: Request, err: OverrideError) -> JSONResponse:
        return _from_override_error(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return _from_validation(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), headers=getattr(err, "headers", None))
