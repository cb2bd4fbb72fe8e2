"""Lago events: create one, create a batch, get one by `transaction_id`.

Each Lago event becomes a CloudEvent and goes through the native ingest path (the same
de-duplication forever, rollups and live entitlement counters): `transaction_id` is its id,
under the fixed source `lago` (Lago de-duplicates on `transaction_id` per organization),
`code` its type, `external_subscription_id` (else `external_customer_id`) its subject,
`timestamp` (unix seconds) its time and `properties` its data. The native decoder judges
every event; its findings come back under Lago's field names.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import Request, Response

from allotment import codec
from allotment.api.body import read_limited
from allotment.api.compat.lago_http import SOURCE, at, at_ms, error, invalid, lago_router
from allotment.api.deps import Ingester, Reader, ReadSession, database, settings
from allotment.api.responses import Json
from allotment.api.routers.events import ingest_body
from allotment.errors import MalformedRequest
from allotment.metering import events as event_log
from allotment.metering.ingest import IngestResult
from allotment.types import from_micros

router = lago_router()

_FIELDS = {"id": "transaction_id", "type": "code", "subject": "external_subscription_id",
           "time": "timestamp", "data": "properties"}
_NUMBER = re.compile(r"\s*-?\d+(\.\d+)?([eE][+-]?\d+)?\s*")


def is_lago_body(body: bytes) -> bool:
    """A Lago event (`{"event": {...}}`) rather than a CloudEvent or a batch of them: cheap
    for the CloudEvents that share the path (no second parse unless the key is there)."""
    if b'"event"' not in body or body.lstrip()[:1] != b"{":
        return False
    try:
        value = codec.loads(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return False
    return isinstance(value, dict) and "event" in value and "specversion" not in value and "id" not in value


def _time(value: Any) -> Any:
    """Unix seconds (a number or its text) as RFC 3339; anything else is left for the decoder
    to judge (an RFC 3339 string is accepted as such)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    if isinstance(value, str) and not _NUMBER.fullmatch(value):
        return value
    try:
        return from_micros(int(Decimal(str(value).strip()) * 1_000_000)).isoformat()
    except (ArithmeticError, ValueError, OverflowError, OSError):
        return str(value)  # not a time: the decoder refuses it by field


def cloud_event(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    item = {k: v for k, v in item.items() if v is not None}  # null: as if not sent
    tx = item.get("transaction_id")
    event: dict[str, Any] = {
        "specversion": "1.0", "source": SOURCE,
        "id": str(tx) if isinstance(tx, int) and not isinstance(tx, bool) else tx,
        "type": item.get("code"),
        "subject": item.get("external_subscription_id", item.get("external_customer_id")),
        "time": _time(item.get("timestamp")),
        "data": item.get("properties", {}),
    }
    return {k: v for k, v in event.items() if v is not None}


def _reason(field: str, reason: str) -> str:
    if reason == "is required" or "length >= 1" in reason:
        return "value_is_mandatory"
    return "invalid_format" if field == "timestamp" else reason


def _details(result: IngestResult) -> dict[int, dict[str, list[str]]]:
    out: dict[int, dict[str, list[str]]] = {}
    for p in result.problems:
        head = (p.field or "").split(".", 1)[0]
        field = _FIELDS.get(head, head) + (p.field or "")[len(head):] if p.field else "event"
        out.setdefault(p.index, {}).setdefault(field, []).append(_reason(field, p.reason))
    return out


async def ingest(request: Request, tenant_id: str, items: list[Any]) -> IngestResult:
    body = codec.dumps([cloud_event(item) for item in items]).encode()
    return await ingest_body(request, tenant_id, keep_unreadable=True, body=body)


async def _object(request: Request) -> dict[str, Any]:
    body = await read_limited(request, settings(request).max_body_bytes)
    try:
        value = codec.loads(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise MalformedRequest.body("is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedRequest.body("must be a JSON object")
    return value


def event_out(view: event_log.EventView) -> dict[str, Any]:
    e = view.event
    return {
        "lago_id": f"evt_{e.seq}",
        "transaction_id": e.event_id,
        "lago_customer_id": None,
        "lago_subscription_id": None,
        "external_subscription_id": e.subject,
        "code": e.type,
        "timestamp": at_ms(from_micros(e.time_us)),
        "precise_total_amount_cents": None,
        "properties": view.data or {},
        "created_at": at(from_micros(e.received_us)),
    }


async def create_one(request: Request, tenant_id: str, value: dict[str, Any]) -> Response:
    """Answers the stored event (for a re-sent `transaction_id`: the one stored first)."""
    item = value.get("event")
    if not isinstance(item, dict):
        return invalid({"event": ["value_is_mandatory"]})
    result = await ingest(request, tenant_id, [item])
    if result.problems:
        return invalid(_details(result)[0])
    async with database(request).transaction(readonly=True) as session:  # after the ingest committed
        view = await event_log.find_event(session, tenant_id, source=SOURCE, event_id=str(item["transaction_id"]))
    assert view is not None  # just stored, or stored before
    return Json({"event": event_out(view)})


async def create_batch(request: Request, tenant_id: str, value: dict[str, Any]) -> Response:
    """Every valid event is stored even when others are refused (a 422 naming each refused one
    by index): sending the batch again after fixing it counts each event once. Each event is
    answered as stored, as one sent alone is: a re-sent `transaction_id` with the one stored first."""
    items = value.get("events")
    if not isinstance(items, list) or not items:
        return invalid({"events": ["no_events"]})
    result = await ingest(request, tenant_id, items)
    if result.problems:
        details = {str(index): fields for index, fields in _details(result).items()}
        return error(422, "validation_errors", details)
    ids = [str(cloud_event(item)["id"]) for item in items]
    async with database(request).transaction(readonly=True) as session:  # after the ingest committed
        stored = await event_log.find_events(session, tenant_id, source=SOURCE, event_ids=list(dict.fromkeys(ids)))
    return Json({"events": [event_out(stored[i]) for i in ids]})  # each just stored, or stored before


@router.post("/v1/events", summary="Send one usage event (Lago)")
async def create_event(request: Request, principal: Ingester) -> Response:
    return await create_one(request, principal.tenant_id, await _object(request))


@router.post("/v1/events/batch", summary="Send a batch of usage events (Lago)")
async def create_events(request: Request, principal: Ingester) -> Response:
    return await create_batch(request, principal.tenant_id, await _object(request))


@router.get("/v1/events/{transaction_id:path}", summary="One event by its transaction_id (Lago)")
async def get_event(transaction_id: str, principal: Reader, session: ReadSession) -> Response:
    view = await event_log.find_event(session, principal.tenant_id, source=SOURCE, event_id=transaction_id)
    if view is None:
        return error(404, "event_not_found")
    return Json({"event": event_out(view)})
