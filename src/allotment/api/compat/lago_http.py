"""HTTP plumbing of the Lago surface: its error bodies, pagination and time format.

Lago's clients read a resource under its root key (`{"customer": {...}}`) and raise on any
status but 200, 201, 202 and 204, keeping the body: validation errors are a 422 whose
`error_details` maps each field to its reasons, unknown resources a 404 whose `code` names
the resource (`customer_not_found`). The services raise the same domain errors as for the
native API; only their rendering differs here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

import pydantic
import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from allotment.api.errors import http_headers, status_of
from allotment.api.responses import Json
from allotment.errors import AllotmentError, AlreadyExists, Conflict, FieldError, NotFound

log = structlog.get_logger()

PREFIX = "/lago/api"
SOURCE = "lago"  # the event source of everything Lago clients send: ids are unique per tenant
Page = Annotated[int, Query(ge=1, le=2**31 - 1)]
PerPage = Annotated[int, Query(ge=1, le=1000)]


def lago_router() -> APIRouter:
    return APIRouter(strict_content_type=False)


def error(status: int, code: str | None = None, details: dict[str, Any] | None = None) -> Json:
    body: dict[str, Any] = {"status": status, "error": HTTPStatus(status).phrase}
    if code is not None:
        body["code"] = code
    if details is not None:
        body["error_details"] = details
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Json(body, status_code=status, headers=headers)


def invalid(details: dict[str, list[str]]) -> Json:
    return error(422, "validation_errors", details)


def details_of(errors: list[FieldError], fallback: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in errors:
        out.setdefault(e.field, []).append(e.message)
    return out or {"base": [fallback]}


def problem_for(request: Request, exc: Exception) -> Response:
    """Every error under /lago/ in Lago's shape (registered as the surface's dialect)."""
    if isinstance(exc, NotFound):
        return error(404, exc.code)
    if isinstance(exc, AlreadyExists):  # Lago: a validation error on the key
        return invalid({"code": ["value_already_exist"]} if not exc.errors else details_of(exc.errors, exc.detail))
    if isinstance(exc, Conflict):  # Lago has no 409: a rule of the data is a validation error
        return invalid(details_of(exc.errors, exc.detail))
    if isinstance(exc, AllotmentError):
        status = status_of(exc)
        details = details_of(exc.errors, exc.detail) if status in (400, 422) else None
        code = "validation_errors" if status == 422 else exc.code
        return error(status, code, details)
    if isinstance(exc, RequestValidationError | pydantic.ValidationError):
        return invalid(_validation_details(exc))
    if isinstance(exc, HTTPException):
        response = error(exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code))
        response.headers.update(http_headers(request, exc) or {})
        return response
    log.exception("unhandled error", path=request.url.path, exc_info=exc)
    return error(500, "internal_error")


def _validation_details(exc: RequestValidationError | pydantic.ValidationError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return {"body": ["is not valid JSON"]}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        # The root key (`customer` of `{"customer": {...}}`) is implied by the endpoint.
        if len(loc) > 1 and loc[0] in ROOT_KEYS:
            loc = loc[1:]
        # Lago's word for a field left out; other reasons are told as they are.
        missing = err.get("type") == "missing"
        message = "value_is_mandatory" if missing else str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        out.setdefault(".".join(loc) or "body", []).append(message)
    return out


ROOT_KEYS = frozenset({"billable_metric", "customer", "subscription", "event", "plan"})


def at(value: datetime | None) -> str | None:
    """Lago's timestamps: ISO 8601 in UTC with a `Z`, to the second."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at_ms(value: datetime) -> str:
    """An event's timestamp as Lago answers it: to the millisecond (`...T12:00:00.500Z`)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meta(page: int, per_page: int, total: int) -> dict[str, Any]:
    pages = max(1, -(-total // per_page))
    return {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }
