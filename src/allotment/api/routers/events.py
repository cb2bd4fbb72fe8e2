"""Native event ingestion and inspection (`/v1/events`)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from allotment.api import idempotency, metrics
from allotment.api.body import read_limited
from allotment.api.deps import (
    Cursor,
    Ingester,
    Limit,
    Reader,
    ReadSession,
    database,
    decode_seq_cursor,
    encode_cursor,
    page,
    settings,
)
from allotment.api.errors import problem
from allotment.api.pages import Page
from allotment.api.responses import Json
from allotment.entitlements import metered_usage
from allotment.errors import FieldError, ValidationFailed
from allotment.metering import events as event_log
from allotment.metering import ingest as ingest_service
from allotment.metering import meters
from allotment.metering.schemas import EventRead, IngestSummary, RejectedRead
from allotment.metering.wire import binary_mode_event, decode
from allotment.types import AwareInstant, as_utc, from_micros, to_micros, utcnow

router = APIRouter(prefix="/v1/events", tags=["events"])
_LIST = "/v1/events"
_REJECTED = "/v1/events/rejected"

# CloudEvents forbids control characters in its attributes (metering/wire.py refuses them).
_ATTRIBUTE = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}
_CLOUDEVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "source", "type", "subject"],
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": _ATTRIBUTE,
        "source": _ATTRIBUTE,
        "type": _ATTRIBUTE,
        "subject": _ATTRIBUTE,
        "time": {"type": ["string", "null"], "format": "date-time"},
        "data": {"type": ["object", "null"]},  # null or absent: an event without data
        "datacontenttype": {"type": ["string", "null"]},
    },
}
_BODY = {
    "required": True,
    "content": {
        media: {"schema": {"oneOf": [_CLOUDEVENT_SCHEMA, {"type": "array", "items": _CLOUDEVENT_SCHEMA}]}}
        for media in ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
    },
}


async def ingest_body(
    request: Request, tenant_id: str, *, keep_unreadable: bool = False, body: bytes | None = None
) -> ingest_service.IngestResult:
    """Shared by every ingest surface (native, OpenMeter): decode, prepare, store, observe.

    `keep_unreadable` stores events a meter cannot read instead of refusing them
    (`ingest_service.prepare`). `body` is the request's, when the caller has read it already
    (to tell which client sent it) or rewritten it (from another product's event shape).

    The batch is decoded and prepared before it waits for the database (SQLite's single writer
    in particular), and stored in one transaction with whatever batches this process's other
    requests send meanwhile (`metered_usage.ingest_together`).
    """
    started = time.perf_counter()
    config = settings(request)
    if body is None:
        body = await read_limited(request, config.max_body_bytes)
    body = binary_mode_event(request.headers, body) or body
    decoded = decode(body, max_events=config.max_batch_events)
    received_us = to_micros(utcnow())
    catalogue = meters.cached_catalogue(tenant_id)
    prepared = (
        ingest_service.prepare(decoded, catalogue, received_us=received_us, keep_unreadable=keep_unreadable)
        if catalogue else None
    )
    batch = ingest_service.Batch(decoded, received_us, prepared, keep_unreadable)
    result = await metered_usage.ingest_together(database(request), metered_usage.Batch(tenant_id, batch))
    metrics.EVENTS_ACCEPTED.inc(result.accepted)
    metrics.EVENTS_DUPLICATE.inc(result.duplicates)
    metrics.EVENTS_REJECTED.inc(len(result.problems))
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    return result


@router.post(
    "",
    response_model=IngestSummary,
    openapi_extra={"requestBody": _BODY},
    summary="Ingest one CloudEvent or a batch",
    responses={422: {"description": "Every event in the request was rejected"}},
)
async def ingest(
    request: Request, principal: Ingester, idempotency_key: idempotency.KeyHeader = None  # read by `answered`
) -> Json:
    """Stored durably before the answer; `(source, id)` counts once forever; each rejected
    event is reported by index while the rest of the batch is kept. With an `Idempotency-Key`,
    a retry gets the first answer again and the key with another batch is a 409."""
    keyed = await idempotency.answered(database(request), principal.tenant_id, request)
    answer = await _ingested(request, principal.tenant_id)
    if keyed is not None and answer.status_code < 400:
        await idempotency.remember_answer(database(request), principal.tenant_id, keyed, answer.status_code,
                                          bytes(answer.body))
    return answer


async def _ingested(request: Request, tenant_id: str) -> Json:
    result = await ingest_body(request, tenant_id)
    errors = [{"index": p.index, "field": p.field, "message": p.reason} for p in result.problems]
    if result.problems and result.accepted == 0 and result.duplicates == 0:
        return problem(
            422,
            "events_rejected",
            "Every event was rejected",
            "; ".join(f"[{p.index}] {p.field or 'event'}: {p.reason}" for p in result.problems[:20]),
            [FieldError(f"[{p.index}]" + (f".{p.field}" if p.field else ""), p.reason) for p in result.problems],
        )
    return Json(
        {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": len(errors), "errors": errors}
    )


@router.get("", response_model=Page[EventRead], summary="Recent events with their status")
async def list_events(
    principal: Reader,
    session: ReadSession,
    limit: Limit = 50,
    cursor: Cursor = None,
    subject: Annotated[list[str] | None, Query()] = None,
    customer: Annotated[list[str] | None, Query()] = None,
    type: str | None = None,
    from_: Annotated[AwareInstant | None, Query(alias="from")] = None,
    to: AwareInstant | None = None,
    status: Annotated[Literal["counted", "unattributed", "duplicate"] | None, Query(
        description="counted or unattributed (applied as the log is read: a page may hold fewer than `limit`"
        " events, even none, while `next_cursor` goes on); duplicate: events that arrived more than once."
        " Rejected events were never stored as events: `GET /v1/events/rejected` lists them")] = None,
) -> Response:
    start_us = to_micros(as_utc(from_)) if from_ else None
    end_us = to_micros(as_utc(to)) if to else None
    if start_us is not None and end_us is not None and start_us >= end_us:
        raise ValidationFailed.on("from", "must be before 'to'")
    flt = event_log.EventFilter(
        subjects=subject,
        customers=customer,
        type=type,
        start_us=start_us,
        end_us=end_us,
        status=status,
        before_seq=decode_seq_cursor(cursor, of=_LIST),
    )
    found = await event_log.list_events_page(session, principal.tenant_id, flt, limit=limit)
    items = [event_read(v).model_dump() for v in found.views]
    # A status filter may answer a short page, even none, with more to come: follow the cursor.
    next_cursor = None if found.next_before_seq is None else encode_cursor(str(found.next_before_seq), of=_LIST)
    return Json({"items": items, "next_cursor": next_cursor})  # data as stored: exact numbers


def event_read(view: event_log.EventView) -> EventRead:
    e = view.event
    return EventRead(
        id=e.event_id,
        source=e.source,
        type=e.type,
        subject=e.subject,
        time=from_micros(e.time_us),
        received_at=from_micros(e.received_us),
        data=view.data,
        customer=view.customer,
        meters=view.meters,
        status=view.status,  # type: ignore[arg-type]
        problems=view.problems,
        duplicates=0 if view.repeat is None else view.repeat.count,
        last_duplicate_at=None if view.repeat is None else from_micros(view.repeat.last_us),
    )


@router.get("/rejected", response_model=Page[RejectedRead], summary="Rejected events, newest first")
async def list_rejected(
    principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    """What ingest refused, by batch index and reason, with the event as sent (cut at 4,096
    characters)."""
    rows = await event_log.list_rejected(
        session, principal.tenant_id, limit=limit, before_seq=decode_seq_cursor(cursor, of=_REJECTED)
    )
    items = [
        RejectedRead(
            received_at=from_micros(r.received_us), index=r.batch_index, field=r.field, reason=r.reason, raw=r.raw
        )
        for r in rows
    ]
    return page(items, rows, limit=limit, position=lambda r: r.seq, of=_REJECTED)
