"""The one place where errors become HTTP responses: ``{"error", "message", "request_id"}``.

Client errors carry their own safe message. Server-side errors (5xx) never echo internal text
(SQL, driver messages, stack traces): the details go to the log under the same request id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from src.app.logging_setup import request_id_var
from src.core.errors import (
    AuthenticationError,
    ServiceError,
    ServiceUnavailableError,
    TransientWarehouseError,
    WarehouseError,
    WarehouseNotFoundError,
)

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}


def error_response(
    status: int, code: str, message: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    request_id = request_id_var.get() or ""
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id}
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    # X-Request-ID is added to every response by the request middleware.
    return JSONResponse(body, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, WarehouseError) and not isinstance(exc, TransientWarehouseError):
        # Driver text never reaches a client; a missing table most likely means no bootstrap yet.
        log.error("warehouse error", extra={"error_code": exc.code, "error": exc.message})
        if isinstance(exc, WarehouseNotFoundError):
            return error_response(
                409, "bootstrap_required", "a table this request needs does not exist; has bootstrap run?"
            )
        return error_response(500, "internal_error", "internal error; quote the request_id to support")
    if exc.status_code >= 500 and not isinstance(exc, ServiceUnavailableError):  # 503s carry safe messages
        if isinstance(exc, TransientWarehouseError):
            log.warning("transient warehouse error", extra={"error": exc.message})
            return error_response(
                503, exc.code, "the warehouse is temporarily unavailable; retry shortly", headers={"Retry-After": "5"}
            )
        log.error("server error", extra={"error_code": exc.code, "error": exc.message})
        return error_response(exc.status_code, "internal_error", "internal error; quote the request_id to support")
    return error_response(exc.status_code, exc.code, exc.message, extra=exc.details, headers=exc.headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        # The body is parsed before the auth dependency runs; keep 401 first for unauthenticated callers.
        authenticate = getattr(request.app.state, "authenticate_headers", None)
        if authenticate is not None:
            try:
                await authenticate(request)
            except AuthenticationError as auth_exc:
                return error_response(401, auth_exc.code, auth_exc.message)
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    fields = [{"field": _field_path(tuple(e.get("loc", ()))), "reason": e.get("msg", "invalid")} for e in errors]
    first = fields[0]
    message = f"{first['field']}: {first['reason']}"
    return error_response(422, "validation_error", message, extra={"errors": fields})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
    return error_response(exc.status_code, code, message, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods.update(route_methods)
    return sorted(methods - {"HEAD"} if "GET" not in methods else methods)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; quote the request_id to support")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
