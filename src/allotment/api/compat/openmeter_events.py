"""OpenMeter events: ingest (`POST /api/v1/events`) and the recent-events listing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated

import msgspec
from fastapi import Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.body import read_limited
from allotment.api.compat import lago_events
from allotment.api.compat.openmeter_customers import customer_ids, known_customers
from allotment.api.compat.openmeter_http import openmeter_router, problem, utc
from allotment.api.compat.openmeter_schemas import ingested_event_out
from allotment.api.deps import Ingester, Reader, ReadSession, settings
from allotment.api.responses import Json
from allotment.api.routers.events import ingest_body
from allotment.errors import FieldError, ValidationFailed
from allotment.metering import events as event_log
from allotment.types import Instant, to_micros

router = openmeter_router()

_MAX_SCANNED_PAGES = 20  # bounds a filtered event listing that keeps few events per page


@router.post("/v1/events", status_code=204, summary="Ingest one CloudEvent or a batch (OpenMeter)")
async def ingest_events(request: Request, principal: Ingester) -> Response:
    """Answers 204 once stored; an event re-sent with the same source and id counts once.

    The content type may be `application/cloudevents+json`, `application/cloudevents-batch+json`
    or `application/json`: the body itself says whether it is one event or an array. As in
    OpenMeter, an event whose data a meter cannot read (its value property missing or not a
    number) is stored all the same, uncounted by that meter, and the events listing shows it
    with a `validationError`. An event that is not a valid CloudEvent is refused: the answer is
    a 400 naming each refused one by index and field (204 would tell the client all were
    stored); the others of the batch are stored all the same, so sending the batch again after
    fixing it counts each event once.
    """
    body = await read_limited(request, settings(request).max_body_bytes)
    if lago_events.is_lago_body(body):  # a Lago client pointed at the root: answered as Lago does
        return await lago_events.create_one(request, principal.tenant_id, msgspec.json.decode(body))
    result = await ingest_body(request, principal.tenant_id, keep_unreadable=True, body=body)
    if result.problems:
        errors = [
            FieldError(f"[{p.index}]" + (f".{p.field}" if p.field else ""), p.reason)
            for p in result.problems
        ]
        stored = result.accepted + result.duplicates
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:20])
        if stored:
            detail = f"{len(errors)} event(s) refused, the other {stored} stored: {detail}"
        # Returned, not raised: the refusals are recorded in this same unit of work.
        return problem(request, 400, "events_rejected", detail, errors)
    return Response(status_code=204)


@router.get("/v1/events", summary="Recently ingested events (OpenMeter)")
async def list_events(
    principal: Reader,
    session: ReadSession,
    subject: Annotated[list[str] | None, Query()] = None,
    customer_id: Annotated[list[str] | None, Query(alias="customerId")] = None,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
    ingested_at_from: Annotated[Instant | None, Query(alias="ingestedAtFrom")] = None,
    ingested_at_to: Annotated[Instant | None, Query(alias="ingestedAtTo")] = None,
    id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Json:
    """Newest arrival first (OpenMeter orders by event time; that order would sort the whole
    event log on every call, which has no index by time alone), as a bare JSON array. As in
    OpenMeter, `from`, `to` and the `ingestedAt*` bounds are inclusive; `id` matches any part of an event id; customers in
    `customerId` that do not exist match nothing. `id` and `ingestedAt*` are applied to at
    most twenty pages of `limit` events. An upper bound before its lower one is a 400 naming
    it, as in OpenMeter."""
    start, end = utc(from_), utc(to)
    _require_order(start, end, "to", "from")
    _require_order(utc(ingested_at_from), utc(ingested_at_to), "ingestedAtTo", "ingestedAtFrom")
    customers = None
    if customer_id is not None:
        customers = await known_customers(session, principal.tenant_id, customer_id)
        if not customers:
            return Json([])
    flt = event_log.EventFilter(
        subjects=subject,
        customers=customers,
        start_us=to_micros(start) if start else None,
        end_us=to_micros(end) + 1 if end else None,
    )
    keep = _event_predicate(id, utc(ingested_at_from), utc(ingested_at_to))
    views = await _scan_events(session, principal.tenant_id, flt, limit, keep)
    ids = await customer_ids(
        session, principal.tenant_id, {v.customer for v in views if v.customer}
    )
    return Json([ingested_event_out(v, ids) for v in views])


def _require_order(low: datetime | None, high: datetime | None, field: str, other: str) -> None:
    if low is not None and high is not None and high < low:
        raise ValidationFailed.on(field, f"must not be before '{other}'")


def _event_predicate(
    event_id: str | None, ingested_from: datetime | None, ingested_to: datetime | None
) -> Callable[[event_log.EventView], bool] | None:
    if event_id is None and ingested_from is None and ingested_to is None:
        return None
    low = to_micros(ingested_from) if ingested_from else None
    high = to_micros(ingested_to) if ingested_to else None

    def keep(view: event_log.EventView) -> bool:
        e = view.event
        return (
            (event_id is None or event_id in e.event_id)
            and (low is None or e.received_us >= low)
            and (high is None or e.received_us <= high)
        )

    return keep


async def _scan_events(
    session: AsyncSession,
    tenant_id: str,
    flt: event_log.EventFilter,
    limit: int,
    keep: Callable[[event_log.EventView], bool] | None,
) -> list[event_log.EventView]:
    if keep is None:
        return await event_log.list_events(session, tenant_id, flt, limit=limit)
    out: list[event_log.EventView] = []
    for _ in range(_MAX_SCANNED_PAGES):
        page = await event_log.list_events(session, tenant_id, flt, limit=limit)
        out += [v for v in page if keep(v)]
        if len(page) < limit or len(out) >= limit:
            break
        flt = replace(flt, before_seq=page[-1].event.seq)
    return out[:limit]
