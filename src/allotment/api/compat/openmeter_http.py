"""HTTP plumbing of the OpenMeter surface: its problem bodies, field names and query encodings.

OpenMeter clients expect `400` (not `422`) for invalid input, camelCase field names, and an
`instance` in every problem; the SDK raises on any status it does not list, and on a JSON
content type whose body is not JSON. Everything here exists to honour that contract while
the services keep raising the same domain errors as for the native API.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from allotment.api.errors import PROBLEM, http_headers, status_of
from allotment.api.responses import Json
from allotment.errors import AllotmentError, FieldError, ValidationFailed

log = structlog.get_logger()

# Invalid input is a 400 for OpenMeter clients; every other domain error keeps its status.
_OPENMETER_STATUS = {422: 400}
_MAX_FILTER_CHARS = 8192  # bounds the work `ast.literal_eval` may be asked to do

# Page numbers are bounded so that an offset always fits a 64-bit database integer.
MAX_PAGE = 2**31 - 1
Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=1000)]
OptionalPage = Annotated[int | None, Query(ge=1, le=MAX_PAGE)]
OptionalPageSize = Annotated[int | None, Query(alias="pageSize", ge=1, le=1000)]
# OpenMeter's older paging, still in its specs: a bare array on v1, the page object on v2.
Offset = Annotated[int | None, Query(ge=0, le=MAX_PAGE * 1000)]
Limit = Annotated[int | None, Query(ge=1, le=1000)]


class Window:
    """Which items to answer, and whether as a page object (`page` None: a bare array)."""

    def __init__(
        self, page: int | None, page_size: int | None, offset: int | None, limit: int | None,
        *, paged: bool,
    ) -> None:  # fmt: skip
        self.page: int | None
        if page is not None or page_size is not None:
            number, self.size = page or 1, page_size or 100
            self.page, self.offset = number, (number - 1) * self.size
        else:
            self.offset, self.size = offset or 0, limit or 100
            self.page = self.offset // self.size + 1 if paged else None

    def answer(self, items: list[dict[str, Any]], total: int) -> Json:
        if self.page is None:
            return Json(items)
        return Json({"items": items, "page": self.page, "pageSize": self.size, "totalCount": total})


def problem(
    request: Request, status: int, code: str, detail: str, errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Json:
    body: dict[str, Any] = {
        "type": code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Json(body, status_code=status, media_type=PROBLEM, headers=headers)


def problem_for(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AllotmentError):
        status = status_of(exc)
        return problem(
            request, _OPENMETER_STATUS.get(status, status), exc.code, exc.detail, exc.errors
        )
    if isinstance(exc, RequestValidationError):
        return _invalid_request(request, exc)
    if isinstance(exc, pydantic.ValidationError):
        return problem_for(request, _failed(_pydantic_errors(exc), {}))
    if isinstance(exc, HTTPException):
        return problem(request, exc.status_code, "http_error", str(exc.detail),
                       headers=http_headers(request, exc))
    log.exception("unhandled error", path=request.url.path, exc_info=exc)
    return problem(request, 500, "internal_error", "an unexpected error occurred")


def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return problem(request, 400, "malformed_request", "body is not valid JSON")
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        errors.append(FieldError(_dotted(loc) or "body", message))
    return problem(request, 400, "validation_failed", _detail(errors), errors)


def openmeter_router() -> APIRouter:
    # Lenient like OpenMeter: a JSON body is read whatever content type it was declared with.
    # Errors are rendered by `problem_for`, which the app registers for paths under /api/.
    return APIRouter(strict_content_type=False)


# --- field names -------------------------------------------------------------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _renamed(field: str, names: dict[str, str]) -> str:
    """`value_property` -> `valueProperty`, `subject_keys[0]` -> `usageAttribution.subjectKeys[0]`."""
    match = re.match(r"^([A-Za-z0-9_]+)(.*)$", field)
    if not match:
        return field
    head, tail = match.groups()
    return names.get(head, camel(head)) + tail


def _failed(errors: list[FieldError], names: dict[str, str]) -> ValidationFailed:
    renamed = [FieldError(_renamed(e.field, names), _named_in(e.message, names)) for e in errors]
    return ValidationFailed(_detail(renamed), errors=renamed)


def _named_in(message: str, names: dict[str, str]) -> str:
    """A message naming another field ("must not be less than min_rollover") names it as the
    client does; only our multi-word field names are looked for, so values stay as they are."""
    ours = [n for n in names if "_" in n]
    if not ours:
        return message
    return re.sub(r"\b(" + "|".join(map(re.escape, ours)) + r")\b", lambda m: names[m[1]], message)


def _detail(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid input"


def _pydantic_errors(exc: pydantic.ValidationError) -> list[FieldError]:
    return [
        FieldError(_dotted(list(e["loc"])) or "body", str(e["msg"]).removeprefix("Value error, "))
        for e in exc.errors()
    ]


@contextmanager
def openmeter_fields(names: dict[str, str] | None = None) -> Iterator[None]:
    """Services and native schemas name snake_case fields; OpenMeter clients sent camelCase
    ones (and a few other names, given in `names`). Errors are re-raised under those names."""
    try:
        yield
    except pydantic.ValidationError as exc:
        raise _failed(_pydantic_errors(exc), names or {}) from None
    except ValidationFailed as exc:
        if not exc.errors:
            raise
        raise _failed(exc.errors, names or {}) from None


# --- query-string values -----------------------------------------------------------------------


def utc(at: datetime | None) -> datetime | None:
    """OpenMeter's SDK sends naive datetimes as UTC, so a missing offset means UTC here too."""
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def to_minute(at: datetime | None) -> datetime | None:
    """OpenMeter meters usage by the minute, so it truncates the instants credit starts from
    (entitlement usage, grants and their recurrence) to the minute."""
    return None if at is None else at.replace(second=0, microsecond=0)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationFailed.on("windowTimeZone", f"'{name}' is not an IANA time zone") from None


def filter_group_by(params: QueryParams) -> dict[str, list[str]]:
    """`filterGroupBy` in each form clients send: a Python-repr dict (the official Python SDK),
    JSON, or the deep-object form `filterGroupBy[model]=gpt-4` (the OpenAPI spec)."""
    out: dict[str, list[str]] = {}
    for raw in params.getlist("filterGroupBy"):
        for name, values in _mapping(raw).items():
            out.setdefault(name, []).extend(values)
    for key, value in params.multi_items():
        deep = re.fullmatch(r"filterGroupBy\[([^\]]+)\]", key)
        if deep:
            out.setdefault(deep.group(1), []).append(value)
    return out


def _mapping(raw: str) -> dict[str, list[str]]:
    parsed = _literal(raw)
    if not isinstance(parsed, dict):
        raise ValidationFailed.on("filterGroupBy", "must be an object of group name to value")
    return {str(name): values_of("filterGroupBy", name, value) for name, value in parsed.items()}


def _literal(raw: str) -> Any:
    if len(raw) > _MAX_FILTER_CHARS:
        raise ValidationFailed.on("filterGroupBy", f"is longer than {_MAX_FILTER_CHARS} characters")
    try:
        return json.loads(raw)
    except ValueError:
        pass
    except RecursionError:
        raise ValidationFailed.on("filterGroupBy", "is nested too deeply") from None
    try:
        return ast.literal_eval(raw)  # literals only: never evaluates code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValidationFailed.on(
            "filterGroupBy", 'must be a JSON object such as {"model": "gpt-4"}'
        ) from None


def values_of(field: str, name: object, value: object) -> list[str]:
    """A filter value is one string (GET form) or a list of them (POST form); numbers are
    accepted as their text, because group values are stored as text."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
        raise ValidationFailed.on(f"{field}.{name}", "must be a string or a list of strings")
    return [str(v) for v in items]


def json_param(field: str, raw: str | None) -> Any:
    return None if raw is None else json_text(field, raw)


def json_text(field: str, raw: str) -> Any:
    """JSON sent as text inside a request; nesting deeper than the parser holds (its recursion
    limit) is invalid JSON too, not a server error."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed.on(field, "is not valid JSON") from None
