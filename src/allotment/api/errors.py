"""The one table that turns domain errors into HTTP problems (RFC 7807)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
import structlog
from asyncpg import exceptions as pg  # type: ignore[import-untyped]
from asyncpg.exceptions import CharacterNotInRepertoireError  # type: ignore[import-untyped]
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from allotment.api.idempotency import Replayed, replay
from allotment.api.responses import Json
from allotment.errors import (
    AllotmentError,
    Conflict,
    FieldError,
    Forbidden,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

log = structlog.get_logger()

STATUS: dict[type[AllotmentError], int] = {
    MalformedRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    Unavailable: 503,
}
RETRY_AFTER = "5"  # seconds a client waits before retrying while the database is unreachable
PROBLEM = "application/problem+json"


def status_of(exc: AllotmentError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def problem(
    status: int, code: str, title: str, detail: str, errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Json:
    body: dict[str, Any] = {"type": code, "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Json(body, status_code=status, media_type=PROBLEM, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def http_headers(request: Request, exc: HTTPException) -> Mapping[str, str] | None:
    """The headers an HTTP error carries; a 405 names every method the path serves (RFC 9110),
    not only those of the first route that matched it."""
    if exc.status_code != 405:
        return exc.headers
    routes = request.app.router.routes
    allowed = [m for m in _METHODS
               if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return {**(exc.headers or {}), "Allow": ", ".join(allowed)}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


_PYTHON_DECIMAL = re.compile(r"Decimal\('([^']*)'\)")


def _said(err: Mapping[str, Any]) -> str:
    """A validation error's message in the API's terms: bounds as plain numbers, not as the
    Python values the schemas hold them in."""
    if err.get("type") == "decimal_type":
        return "Input should be a number or a decimal string"
    message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return _PYTHON_DECIMAL.sub(r"\1", message)


def _on_validation(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return _on_domain(request, MalformedRequest.body("is not valid JSON"))
        errors.append(FieldError(_field_name(tuple(err.get("loc", ()))), _said(err)))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem(422, "validation_failed", "Invalid input", detail, errors)


def _on_domain(_: Request, exc: Exception) -> Json:
    assert isinstance(exc, AllotmentError)
    return problem(status_of(exc), exc.code, exc.title, exc.detail, exc.errors)


def _on_http(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = str(exc.detail)
    return problem(exc.status_code, code, detail, detail, headers=http_headers(request, exc))


def _on_unexpected(request: Request, exc: Exception) -> Json:
    log.exception("unhandled error", path=request.url.path)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred")


def _on_disconnect(_: Request, __: Exception) -> Json:
    """The client closed its connection before its body arrived: nothing was done and nobody
    reads this answer. Not a server error, so neither logged nor counted as one."""
    return problem(400, "client_disconnected", "Client disconnected",
                   "the connection closed before the request's body was read")


Render = Callable[[Request, Exception], Response]


def add_dialect(app: FastAPI, prefix: str, render: Render) -> None:
    """Errors on paths under `prefix` are rendered by `render` (a compatibility surface
    answers in its clients' dialect). Handlers run after the request's unit of work has been
    rolled back, whichever dialect renders the error."""
    app.state.problem_dialects = [*getattr(app.state, "problem_dialects", []), (prefix, render)]


def _unstorable(exc: BaseException) -> MalformedRequest | None:
    """A NUL character reaching PostgreSQL (its text cannot hold one) is bad input, from
    whichever path, query parameter or body field it came."""
    seen: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy wraps the driver's error; follow a few links only
        if seen is None:
            break
        if isinstance(seen, CharacterNotInRepertoireError):
            return MalformedRequest("a value contains the NUL character (\\u0000), which cannot be stored")
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


# Errors that say the database cannot be reached (or refuses connections), not that a
# statement failed: a connection refused or dropped, a database that is gone or shutting down.
_UNREACHABLE = (OSError, pg.PostgresConnectionError, pg.InvalidCatalogNameError,
                pg.OperatorInterventionError, pg.TooManyConnectionsError)


def _unavailable(exc: BaseException) -> Unavailable | None:
    seen: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy wraps the driver's error; follow a few links only
        if seen is None:
            break
        unreachable = isinstance(seen, _UNREACHABLE) or (
            isinstance(seen, sqlite3.OperationalError) and "unable to open" in str(seen)
        ) or (isinstance(seen, DBAPIError) and seen.connection_invalidated)
        if unreachable:
            return Unavailable("the database cannot be reached; retry later")
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


def _dialect(native: Render) -> Render:
    def handle(request: Request, exc: Exception) -> Response:
        known = _unstorable(exc) or _unavailable(exc)
        dialects: list[tuple[str, Render]] = getattr(request.app.state, "problem_dialects", [])
        for prefix, render in dialects:
            if request.url.path.startswith(prefix):
                return _retry_later(render(request, known or exc))
        return native(request, exc) if known is None else _retry_later(_on_domain(request, known))

    return handle


def _retry_later(response: Response) -> Response:
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", RETRY_AFTER)
    return response


def _on_pydantic(_: Request, exc: Exception) -> Json:
    """A schema validated inside an endpoint (not by FastAPI) failed: the caller's input."""
    assert isinstance(exc, pydantic.ValidationError)
    errors = [
        FieldError(_field_name(tuple(e["loc"])), _said(e)) for e in exc.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem(422, "validation_failed", "Invalid input", detail, errors)


def render(request: Request, exc: Exception) -> Response:
    """What the installed handlers answer for `exc`, for a route served in front of the app."""
    if isinstance(exc, AllotmentError):
        return _on_domain(request, exc)
    if isinstance(exc, pydantic.ValidationError):
        return _on_pydantic(request, exc)
    if isinstance(exc, ClientDisconnect):
        return _on_disconnect(request, exc)
    return _on_storage(request, exc)


def answer(request: Request, exc: Exception) -> Response:
    """What the installed handlers answer for `exc`, in the dialect of the request's path, for
    a request refused before the app routes it."""
    return _dialect(render)(request, exc)


def _on_storage(request: Request, exc: Exception) -> Response:
    known = _unstorable(exc) or _unavailable(exc)
    return _on_unexpected(request, exc) if known is None else _retry_later(_on_domain(request, known))


def install(app: FastAPI) -> None:
    app.add_exception_handler(Replayed, replay)
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
    app.add_exception_handler(RequestValidationError, _dialect(_on_validation))
    app.add_exception_handler(pydantic.ValidationError, _dialect(_on_pydantic))
    app.add_exception_handler(AllotmentError, _dialect(_on_domain))
    app.add_exception_handler(HTTPException, _dialect(_on_http))
    app.add_exception_handler(CharacterNotInRepertoireError, _dialect(_on_storage))
    app.add_exception_handler(DBAPIError, _dialect(_on_storage))
    # The driver's own errors (the hot paths use it directly) and a refused connection.
    for driver_error in (OSError, pg.PostgresError, pg.InterfaceError):
        app.add_exception_handler(driver_error, _dialect(_on_storage))
    app.add_exception_handler(Exception, _dialect(_on_unexpected))
