"""The OpenAPI document: FastAPI's, with the problems each operation may answer.

Errors are part of the contract (RFC 7807 problems, api/errors.py), but FastAPI documents only
its own 422 with a body we never send. Here every operation lists the problems it may answer
as `application/problem+json`: under /v1 400, 401, 403, 404, 422 and 503, plus 409 and 413 for
requests that write and 415 for those that send a JSON body; under /api (the OpenMeter surface, which answers 400 for invalid input)
the same without 422; under /lago (Lago's clients) the same but 409, in Lago's error body.

It also states rules the models' validators and the request screening enforce and FastAPI
cannot see: an `Idempotency-Key` header holds 1 to 255 characters, an update's field the
resource always has (`types.NotNull`) may be left out but not sent as null, no text anywhere
(path, query, header, body, free-form metadata and event data) holds NUL (docs/bad-input.md),
and times lie from 1970 to before the year 9000.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_fields_from_routes
from pydantic import BaseModel

from allotment.api.body import SELF_DECODED
from allotment.api.errors import PROBLEM
from allotment.api.idempotency import HEADER, KEY_SCHEMA
from allotment.types import NotNull

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 7807 problem: what went wrong and, for invalid input, each bad field.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable slug, e.g. customer_not_found."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_ALWAYS = {
    "400": "Malformed request: a body that is not JSON, a NUL character, a bad cursor",
    "401": "No API key, or one that is unknown or revoked",
    "403": "The key's scope does not allow this",
    "404": "Something the request names does not exist",
    "503": "The database cannot be reached for now: retry after `Retry-After` seconds",
}
_WRITES = {
    "409": "Conflict: a duplicate key, an idempotency key reused with another request",
    "413": "The body or batch is too large",
}
_INVALID = {"422": "Well-formed but invalid: each bad field is named in `errors`"}
_JSON_BODY = {"415": "The body is not sent as JSON (`Content-Type: application/json`)"}
_WITH_BODY = {"post", "put", "patch"}
# Lago's clients read its error body (compat/lago_http.py): a 409 there is a 422.
_LAGO = "/lago/"
_LAGO_ERRORS = {**_ALWAYS, **_INVALID}
LAGO_ERROR_SCHEMA: dict[str, Any] = {
    "title": "LagoError",
    "description": "Lago's error: the status, its phrase, a code and, for invalid input, each field's reasons.",
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "code": {"type": "string", "description": "e.g. validation_errors, customer_not_found."},
        "error_details": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
}
_READS = {"get", "head"}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
NO_NUL = "^[^\\u0000]*$"
# Times are taken from 1970 to before the year 9000 (types.OUT_OF_RANGE).
IN_RANGE = "^(19[7-9][0-9]|[2-8][0-9]{3})-"
_ANY_JSON_REF = {"$ref": "#/components/schemas/JsonValue"}
# Free-form JSON (metadata, event data, static configuration) as it is taken: any value, but no
# text or member name holding NUL.
ANY_JSON_SCHEMA: dict[str, Any] = {
    "title": "JsonValue",
    "description": "Any JSON value without the NUL character in a string or a member name.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": _ANY_JSON_REF},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": _ANY_JSON_REF},
    ],
}


def install(app: FastAPI) -> None:
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            without_null(spec, _body_models(app))
            without_nul(spec)  # before the errors, which may quote a NUL the request held
            with_lago_errors(spec)
            with_problems(spec)
            with_idempotency_keys(spec)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def with_problems(spec: dict[str, Any]) -> None:
    """Add the problem responses to every operation of `spec`, in place."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in spec.get("paths", {}).items():
        native = path.startswith("/v1/")
        if not native and not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if not native:
                responses.pop("422", None)
            wanted = {**_ALWAYS, **({} if method in _READS else _WRITES)}
            wanted |= _INVALID if native else {}
            if method in _WITH_BODY and path not in SELF_DECODED:
                wanted |= _JSON_BODY
            for code, description in wanted.items():
                responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code.startswith("4") or code == "503":
                    response["content"] = {PROBLEM: {"schema": _PROBLEM_REF}}
    # FastAPI's validation body is now referenced nowhere (unless from a path outside both).
    if "#/components/schemas/HTTPValidationError" not in repr(spec.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def with_lago_errors(spec: dict[str, Any]) -> None:
    """Add Lago's error answers to every operation of the Lago surface of `spec`, in place."""
    spec.setdefault("components", {}).setdefault("schemas", {})["LagoError"] = LAGO_ERROR_SCHEMA
    for path, operations in spec.get("paths", {}).items():
        if not path.startswith(_LAGO):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            wanted = _LAGO_ERRORS | ({} if method in _READS else {"413": _WRITES["413"]})
            wanted |= _JSON_BODY if method in _WITH_BODY else {}
            for code, description in wanted.items():
                responses[code] = {"description": description, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/LagoError"}}}}


def with_idempotency_keys(spec: dict[str, Any]) -> None:
    """Every `Idempotency-Key` header parameter of `spec` says what a key may be, in place."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "header" and parameter["name"] == HEADER:
                    parameter["schema"] = dict(KEY_SCHEMA)


def without_null(spec: dict[str, Any], models: set[type[BaseModel]]) -> None:
    """Take null out of the documented types of the `NotNull` fields of `models`, in place.

    Such a field is optional (left out, the resource keeps its value) but null is refused,
    so `X | None` must be documented as X."""
    schemas = spec.get("components", {}).get("schemas", {})
    for model in models:
        schema = schemas.get(model.__name__) or schemas.get(f"{model.__name__}-Input")
        for name, field in model.model_fields.items():
            prop = None if schema is None else schema["properties"].get(field.alias or name)
            if prop is None or NotNull not in field.metadata or "anyOf" not in prop:
                continue
            kinds = [kind for kind in prop.pop("anyOf") if kind != {"type": "null"}]
            prop.update(kinds[0] if len(kinds) == 1 else {"anyOf": kinds})


def _body_models(app: FastAPI) -> set[type[BaseModel]]:
    """The models of the operations' fields (bodies, responses, parameters), as FastAPI finds them."""
    annotations = (field.field_info.annotation for field in get_fields_from_routes(app.routes))
    return {a for a in annotations if isinstance(a, type) and issubclass(a, BaseModel)}


def without_nul(spec: dict[str, Any]) -> None:
    """Say of every text of `spec` that it cannot hold NUL (and of each time, its years), and of
    every free-form object that its members are JSON without NUL, in place."""
    for node in _schemas_in(spec.get("paths", {}), spec.get("components", {}).get("schemas", {})):
        kinds = node.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds or []
        if "string" in kinds and not {"pattern", "enum", "const", "format"} & set(node):
            node["pattern"] = NO_NUL
        elif "string" in kinds and node.get("format") == "date-time" and "pattern" not in node:
            node["pattern"] = IN_RANGE
        free = "properties" not in node and node.get("additionalProperties", True) in (True, {})
        if "object" in kinds and free:
            node["propertyNames"] = {"pattern": NO_NUL}
            node["additionalProperties"] = _ANY_JSON_REF
    spec["components"]["schemas"]["JsonValue"] = ANY_JSON_SCHEMA


def _schemas_in(*roots: object) -> Iterator[dict[str, Any]]:
    """Every object under `roots` (each schema and subschema, and whatever else: only nodes
    with a JSON Schema `type` are changed)."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
