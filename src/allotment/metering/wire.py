"""Decoding ingest bodies: CloudEvents 1.0, one event or a batch, validated per event.

The whole batch is decoded and validated in one msgspec pass (fast path); only when that fails
is it re-validated event by event, so that each bad event is reported by index and field while
the good ones are kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from allotment.codec import json_number
from allotment.errors import MalformedRequest, PayloadTooLarge, Problem
from allotment.types import OUT_OF_RANGE, within_range

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class CloudEvent(msgspec.Struct, forbid_unknown_fields=False):
    id: Text
    source: Text
    type: Text
    subject: Text
    specversion: str = "1.0"
    time: datetime | None = None
    data: dict[str, Any] | None = None
    datacontenttype: str | None = None


@dataclass
class Decoded:
    events: list[tuple[int, CloudEvent]]  # (index in the request, event)
    problems: list[Problem]
    raw: list[Any] | None  # the undecoded items, kept only when some failed (for the record)


_single = msgspec.json.Decoder(CloudEvent, float_hook=json_number)
_batch = msgspec.json.Decoder(list[CloudEvent], float_hook=json_number)
_any = msgspec.json.Decoder(float_hook=json_number)
_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def decode(body: bytes, *, max_events: int) -> Decoded:
    """Decode one CloudEvent (a JSON object) or a batch (a JSON array) of them."""
    stripped = body.lstrip()
    if not stripped:
        raise MalformedRequest.body("is empty: send a CloudEvent or an array of them")
    is_batch = stripped[:1] == b"["
    try:
        events = _batch.decode(body) if is_batch else [_single.decode(body)]
        if len(events) > max_events:
            raise _too_many(len(events), max_events)
        return _checked([(i, e) for i, e in enumerate(events)], [], None)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as exc:
        raise MalformedRequest.body(f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
    items = _decode_any(body)
    if not isinstance(items, list | dict):
        raise MalformedRequest.body("must be a CloudEvent object or an array of them")
    if not is_batch:
        items = [items]
    if len(items) > max_events:
        raise _too_many(len(items), max_events)
    good: list[tuple[int, CloudEvent]] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        if (where := _infinite(item)) is not None:
            problems.append(Problem(index, "is a number beyond the range of a double", where))
            continue
        try:
            good.append((index, msgspec.convert(item, CloudEvent)))
        except msgspec.ValidationError as exc:
            field, reason = _explain(str(exc), item)
            problems.append(Problem(index, reason, field))
    return _checked(good, problems, items)


def _decode_any(body: bytes) -> Any:
    try:
        return _any.decode(body)
    except msgspec.ValidationError:
        pass  # a number beyond a double (1e400): JSON by grammar, decoded below as infinity
    except msgspec.DecodeError as exc:
        raise MalformedRequest.body(f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
    try:
        return json.loads(body, parse_float=_number_or_infinity)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise MalformedRequest.body(f"is not valid JSON: {exc}") from None


def _number_or_infinity(text: str) -> float | Decimal:
    """As the decoders read numbers, but a number beyond a double is kept (as infinity) so that
    its event is rejected by field."""
    try:
        return json_number(text)
    except ValueError:
        return float(text)


def _too_deep() -> MalformedRequest:
    return MalformedRequest.body("is not valid JSON: nested too deeply")


def _infinite(value: Any, path: str = "") -> str | None:
    """The path of the first number in `value` that is not finite, so its event is rejected
    by field rather than stored with a number no reader can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items: Any = ((f"{path}.{key}" if path else str(key), v) for key, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, inner in items:
        if (found := _infinite(inner, where)) is not None:
            return found
    return None


def binary_mode_event(headers: Mapping[str, str], body: bytes) -> bytes | None:
    """A CloudEvent sent in HTTP binary content mode (attributes in `ce-*` headers, the body
    is the data), rewritten as one structured event; None when the request is not one."""
    if "ce-id" not in headers:
        return None
    event: dict[str, Any] = {
        name: headers[f"ce-{name}"]
        for name in ("specversion", "id", "source", "type", "subject", "time")
        if f"ce-{name}" in headers
    }
    if body.strip():
        try:
            event["data"] = _any.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedRequest(f"body (the event's data) is not valid JSON: {exc}") from None
    return msgspec.json.encode(event)


def _checked(
    events: list[tuple[int, CloudEvent]], problems: list[Problem], raw: list[Any] | None
) -> Decoded:
    """Rules msgspec's types cannot say: an offset on `time`, the spec version, no control
    characters."""
    kept = []
    for index, event in events:
        if event.time is not None and event.time.tzinfo is None:
            problems.append(Problem(index, "must be RFC 3339 with a UTC offset", "time"))
        elif event.time is not None and not within_range(event.time):
            problems.append(Problem(index, OUT_OF_RANGE, "time"))
        elif event.specversion != "1.0":
            problems.append(Problem(index, "must be '1.0'", "specversion"))
        elif (field := _with_control(event)) is not None:
            problems.append(Problem(index, _CONTROL_REASON, field))
        else:
            kept.append((index, event))
    problems.sort(key=lambda p: p.index)
    return Decoded(kept, problems, raw)


_CONTROL_REASON = "must not contain control characters (CloudEvents: U+0000-U+001F, U+007F-U+009F)"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _with_control(event: CloudEvent) -> str | None:
    """The first identity field holding a control character, which CloudEvents forbids in its
    attributes (and PostgreSQL text cannot hold NUL); None for the usual event."""
    if event.id.isprintable() and event.source.isprintable() and event.type.isprintable() \
            and event.subject.isprintable():  # C speed; the pattern only where this is unsure
        return None
    for name in ("id", "source", "type", "subject"):
        if _CONTROL.search(getattr(event, name)):
            return name
    return None


_REQUIRED = ("id", "source", "type", "subject")


def _explain(message: str, item: Any) -> tuple[str | None, str]:
    missing = _MISSING.search(message)
    if missing:
        # msgspec stops at the first; a sender should learn everything it left out at once
        absent = [name for name in _REQUIRED if name not in item] if isinstance(item, dict) else []
        if len(absent) > 1 and absent[0] == missing.group(1):
            named = [f"`{name}`" for name in absent[1:]]
            others = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
            return absent[0], f"is required, as are {others}"
        return missing.group(1), "is required"
    at = _AT.search(message)
    field = at.group(1) if at and at.group(1) else None
    reason = _AT.sub("", message)
    if field is None and message.startswith("Expected `object`"):
        return None, "each event must be a JSON object"
    return field, reason[0].lower() + reason[1:] if reason else "is invalid"


def _too_many(count: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"batch has {count} events; at most {limit} are accepted per request")
