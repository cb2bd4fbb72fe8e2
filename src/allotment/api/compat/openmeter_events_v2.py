"""OpenMeter's v2 event listing (`GET /api/v2/events`): cursor pages and a JSON `filter`.

`filter` is OpenMeter's filter object, sent as JSON text: `id`, `source`, `subject`, `type` take
string operators (`$eq`, `$ne`, `$in`, `$nin`, `$like`, `$nlike`, `$ilike`, `$nilike`, `$gt`,
`$gte`, `$lt`, `$lte`, `$and`, `$or`), `customerId` takes `$eq` and `$in`, `time` and
`ingestedAt` take `$gt`, `$gte`, `$lt`, `$lte`, `$and`, `$or`. What the event log is indexed
for goes into the query (subjects and customers matched exactly, one type, event-time bounds);
the rest is judged per event. Newest arrival first, as the v1 listing; a page scans at most
twenty times `limit` events, and `nextCursor` continues after the last event scanned, so a
sparse filter pages on rather than stopping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import TypeAdapter, ValidationError

from allotment import codec
from allotment.api.compat.openmeter_customers import customer_ids, known_customers
from allotment.api.compat.openmeter_http import openmeter_router
from allotment.api.compat.openmeter_schemas import ingested_event_out
from allotment.api.deps import Reader, ReadSession, decode_seq_cursor, encode_cursor
from allotment.api.responses import Json
from allotment.errors import FieldError, MalformedRequest
from allotment.metering import events as event_log
from allotment.types import to_micros

router = openmeter_router()
_LIST = "/api/v2/events"

_SCANNED_PAGES = 20
_STRINGS = ("id", "source", "subject", "type")
_TIMES = ("time", "ingestedAt")
_Predicate = Callable[[event_log.EventView], bool]
_instant = TypeAdapter(datetime)


@router.get("/v2/events", summary="Ingested events, filtered, in cursor pages (OpenMeter v2)")
async def list_events(
    principal: Reader,
    session: ReadSession,
    filter: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    client_id: Annotated[str | None, Query(alias="clientId")] = None,  # progress tracking: unused
) -> Json:
    """`{items, nextCursor}`; an operator or field OpenMeter does not have is a 400 naming it."""
    before_seq = decode_seq_cursor(cursor, of=_LIST)
    spec = _parse(filter)
    flt, keep = await _plan(session, principal.tenant_id, spec)
    if flt is None:  # customers named that do not exist: nothing matches
        return Json({"items": [], "nextCursor": None})
    if before_seq is not None:
        flt.before_seq = before_seq
    found: list[event_log.EventView] = []
    more = False
    for _ in range(_SCANNED_PAGES):
        page = await event_log.list_events(session, principal.tenant_id, flt, limit=limit)
        found += [v for v in page if keep(v)]
        more = len(page) == limit
        if page:
            flt.before_seq = page[-1].event.seq
        if not more or len(found) >= limit:
            break
    if len(found) > limit:
        found, more = found[:limit], True
        flt.before_seq = found[-1].event.seq
    ids = await customer_ids(session, principal.tenant_id, {v.customer for v in found if v.customer})
    next_cursor = encode_cursor(str(flt.before_seq), of=_LIST) if more and flt.before_seq is not None else None
    return Json({"items": [ingested_event_out(v, ids) for v in found], "nextCursor": next_cursor})


def _parse(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        spec = codec.loads(text)
    except (codec.DecodeError, RecursionError):  # nested past the decoder's depth: not JSON to us
        raise _bad("filter", "is not JSON") from None
    if not isinstance(spec, dict):
        raise _bad("filter", "must be a JSON object")
    for name in spec:
        if name not in (*_STRINGS, *_TIMES, "customerId"):
            raise _bad(f"filter.{name}", "is not a field events are filtered by")
    return spec


async def _plan(
    session: ReadSession, tenant_id: str, spec: dict[str, Any]
) -> tuple[event_log.EventFilter | None, _Predicate]:
    """The query's own filter (what the index serves) and the per-event predicate."""
    flt = event_log.EventFilter()
    checks: list[_Predicate] = []
    for name in _STRINGS:
        if name in spec:
            checks.append(_on_string(name, _string_test(spec[name], f"filter.{name}")))
    if isinstance(spec.get("subject"), dict) and set(spec["subject"]) <= {"$eq", "$in"}:
        flt.subjects = _exact(spec["subject"])
    if isinstance(spec.get("type"), dict) and set(spec["type"]) == {"$eq"}:
        flt.type = str(spec["type"]["$eq"])
    for name in _TIMES:
        if name in spec:
            checks.append(_on_time(name, _time_test(spec[name], f"filter.{name}")))
    if "time" in spec:
        flt.start_us, flt.end_us = _time_bounds(spec["time"])
    if "customerId" in spec:
        ops = spec["customerId"]
        if not isinstance(ops, dict) or not ops or not set(ops) <= {"$eq", "$in"}:
            raise _bad("filter.customerId", "takes $eq or $in")
        customers = await known_customers(session, tenant_id, _exact(ops))
        if not customers:
            return None, lambda v: False
        flt.customers = customers
    return flt, lambda v: all(check(v) for check in checks)


def _on_string(name: str, test: Callable[[str], bool]) -> _Predicate:
    def check(view: event_log.EventView) -> bool:
        e = view.event
        return test({"id": e.event_id, "source": e.source, "subject": e.subject, "type": e.type}[name])

    return check


def _on_time(name: str, test: Callable[[int], bool]) -> _Predicate:
    def check(view: event_log.EventView) -> bool:
        return test(view.event.time_us if name == "time" else view.event.received_us)

    return check


def _exact(ops: dict[str, Any]) -> list[str]:
    values = [ops["$eq"]] if "$eq" in ops else ops.get("$in", [])
    if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
        raise _bad("filter", "$eq takes a string and $in a list of strings")
    return [str(x) for x in values]


def _string_test(ops: Any, where: str) -> Callable[[str], bool]:
    """One string filter (operators combine with AND, as OpenMeter's do)."""
    if not isinstance(ops, dict) or not ops:
        raise _bad(where, "must be an object of operators such as {\"$eq\": \"...\"}")
    tests = [_string_op(op, arg, f"{where}.{op}") for op, arg in ops.items()]
    return lambda s: all(t(s) for t in tests)


def _string_op(op: str, arg: Any, where: str) -> Callable[[str], bool]:
    if op in ("$and", "$or"):
        if not isinstance(arg, list) or not arg:
            raise _bad(where, "takes a list of filters")
        parts = [_string_test(part, f"{where}[{i}]") for i, part in enumerate(arg)]
        join = all if op == "$and" else any
        return lambda s: join(p(s) for p in parts)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list) or not all(isinstance(x, str) for x in arg):
            raise _bad(where, "takes a list of strings")
        allowed = set(arg)
        return (lambda s: s in allowed) if op == "$in" else (lambda s: s not in allowed)
    if not isinstance(arg, str):
        raise _bad(where, "takes a string")
    compare: dict[str, Callable[[str], bool]] = {
        "$eq": lambda s: s == arg, "$ne": lambda s: s != arg,
        "$gt": lambda s: s > arg, "$gte": lambda s: s >= arg,
        "$lt": lambda s: s < arg, "$lte": lambda s: s <= arg,
    }
    if op in compare:
        return compare[op]
    if op in ("$like", "$nlike", "$ilike", "$nilike"):
        pattern = _like(arg, fold=op.endswith("ilike"))
        wanted = not op.startswith("$n")
        return lambda s: bool(pattern.fullmatch(s)) is wanted
    raise _bad(where, "is not an operator of this filter")


def _like(pattern: str, *, fold: bool) -> re.Pattern[str]:
    """SQL LIKE: `%` any run, `_` one character."""
    text = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(text, re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _time_test(ops: Any, where: str) -> Callable[[int], bool]:
    if not isinstance(ops, dict) or not ops:
        raise _bad(where, "must be an object of operators such as {\"$gte\": \"...\"}")
    tests: list[Callable[[int], bool]] = []
    for op, arg in ops.items():
        if op in ("$and", "$or"):
            if not isinstance(arg, list) or not arg:
                raise _bad(f"{where}.{op}", "takes a list of filters")
            parts = [_time_test(part, f"{where}.{op}[{i}]") for i, part in enumerate(arg)]
            tests.append(_joined(parts, every=op == "$and"))
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            tests.append(_against(op, _micros(arg, f"{where}.{op}")))
        else:
            raise _bad(f"{where}.{op}", "is not an operator of this filter")
    return _joined(tests, every=True)


def _joined(tests: list[Callable[[int], bool]], *, every: bool) -> Callable[[int], bool]:
    join = all if every else any
    return lambda us: join(t(us) for t in tests)


def _against(op: str, bound: int) -> Callable[[int], bool]:
    if op == "$gt":
        return lambda us: us > bound
    if op == "$gte":
        return lambda us: us >= bound
    if op == "$lt":
        return lambda us: us < bound
    return lambda us: us <= bound


def _time_bounds(ops: dict[str, Any]) -> tuple[int | None, int | None]:
    """The event-time range the query can use: top-level bounds only ($or stays per event)."""
    start = end = None
    for op, arg in ops.items():
        if op in ("$gt", "$gte"):
            start = _micros(arg, f"filter.time.{op}") + (op == "$gt")
        elif op in ("$lt", "$lte"):
            end = _micros(arg, f"filter.time.{op}") + (op == "$lte")
    return start, end


def _micros(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise _bad(where, "must be an RFC 3339 date-time")
    try:
        at = _instant.validate_python(value)
    except ValidationError:
        raise _bad(where, "must be an RFC 3339 date-time") from None
    if at.tzinfo is None:
        raise _bad(where, "must carry an offset (Z for UTC)")
    return to_micros(at)


def _bad(where: str, message: str) -> MalformedRequest:
    return MalformedRequest(f"{where}: {message}", errors=[FieldError(where, message)])
