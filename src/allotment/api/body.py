"""Reading request bodies: a size limit (413 past it, before the whole body is buffered), and
what no endpoint may be given whatever its schema (`problem_in`)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from fastapi import Request
from starlette.types import Message, Receive, Scope

from allotment.errors import (
    AllotmentError,
    FieldError,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# Paths whose bodies are read by their own decoders (per-event problems, NUL refused by field).
SELF_DECODED = frozenset({"/v1/check", "/v1/events", "/api/v1/events"})
_UNPAIRED = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_NUL = "must not contain the NUL character (\\u0000)"


def problem_in(body: bytes, content_type: str | None) -> AllotmentError | None:
    """What makes a JSON request body unfit for any endpoint, found before the endpoint reads it.

    Python's parser, which the framework uses, accepts what JSON forbids and no database can
    store: NaN and Infinity (SQLite's JSON turned them into null, PostgreSQL refused them),
    unpaired UTF-16 surrogates (not text at all) and nesting that exhausts the stack. Strings
    holding NUL are refused by field, on both backends: PostgreSQL text cannot hold one, so
    SQLite must not keep one either. A body declared as anything but JSON is a 415 (a
    form-encoded one, as `curl -d` sends without a header, would otherwise be read as no
    object at all).
    """
    if not body.strip():
        return None
    if content_type is not None and not _is_json(content_type):
        media = content_type.split(";", 1)[0].strip() or "(empty)"
        return UnsupportedMediaType(
            f"the body is sent as '{media}'; send JSON with 'Content-Type: application/json'",
            errors=[FieldError("Content-Type", "must be application/json")],
        )
    try:
        value = _decoder.decode(body)
    except msgspec.ValidationError:
        return None  # a number beyond a double: JSON by grammar, refused by field downstream
    except msgspec.DecodeError as exc:
        reason = str(exc)
        if _UNPAIRED.search(body) and "truncated" in reason:
            reason = "a string holds an unpaired UTF-16 surrogate escape, which is not text"
        return MalformedRequest.body(f"is not valid JSON: {reason}")
    except RecursionError:
        return MalformedRequest.body("is not valid JSON: nested too deeply")
    if b"\\u0000" in body:  # JSON text holds NUL only as this escape
        where = _nul_in(value, "")
        if where is not None:
            return ValidationFailed.on(where or "body", _NUL)
    return None


_decoder = msgspec.json.Decoder()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _nul_in(value: Any, path: str) -> str | None:
    """The path of the first key or string holding NUL, as validation errors name fields."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return inner
            if (found := _nul_in(item, inner)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _nul_in(item, f"{path}[{index}]")) is not None:
                return found
    return None


async def screened(scope: Scope, receive: Receive, limit: int) -> tuple[Receive, AllotmentError | None]:
    """Read the whole body, judge it (`problem_in`), and hand the app a receive that
    replays it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: the app sees that as it would
            return _replaying(b"".join(chunks), receive, first=message), None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return receive, PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    content = b"".join(chunks)
    content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), None)
    return _replaying(content, receive), problem_in(content, content_type)


def _replaying(content: bytes, receive: Receive, *, first: Message | None = None) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": content, "more_body": False}]
    if first is not None:
        pending.append(first)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
