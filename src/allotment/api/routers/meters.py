"""Meters and meter queries (`/v1/meters`)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from allotment import codec
from allotment.api.deps import (
    Admin,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    decode_cursor,
    page,
)
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.entitlements import references
from allotment.entitlements.schemas import TIME_ZONE_SCHEMA
from allotment.errors import ValidationFailed
from allotment.metering import meters as service
from allotment.metering import query as meter_query
from allotment.metering.models import Meter
from allotment.metering.schemas import (
    MeterCreate,
    MeterCreated,
    MeterRead,
    MeterUpdate,
    QueryResult,
)
from allotment.metering.windows import WindowSize
from allotment.types import AwareInstant, as_utc, from_micros, to_micros, utcnow

router = APIRouter(prefix="/v1/meters", tags=["meters"])
_LIST = "/v1/meters"


def meter_read(meter: Meter) -> MeterRead:
    return MeterRead.model_validate(meter, from_attributes=True)


@router.post("", status_code=201, response_model=MeterCreated)
async def create_meter(data: MeterCreate, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Create a meter; events already stored are counted at once (backfill)."""
    meter, counted = await service.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())
    return await idem.respond(201, MeterCreated(**meter_read(meter).model_dump(), backfilled_events=counted))


@router.get("", response_model=Page[MeterRead])
async def list_meters(principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None) -> dict[str, object]:
    rows = await service.list_(session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit)
    return page([meter_read(m) for m in rows], rows, limit=limit, position=lambda r: r.id, of=_LIST)


@router.get("/{meter_key}", response_model=MeterRead)
async def get_meter(meter_key: str, principal: Reader, session: ReadSession) -> MeterRead:
    return meter_read(await service.get(session, principal.tenant_id, meter_key))


@router.patch("/{meter_key}", response_model=MeterRead)
async def update_meter(meter_key: str, data: MeterUpdate, principal: Admin, session: WriteSession) -> MeterRead:
    """A changed `group_by` regroups the meter's whole history: a query by a new group covers
    the events stored before the change. A group a live feature filters on stays as it is (409)."""
    if data.group_by is not None:
        meter = await service.get(session, principal.tenant_id, meter_key)
        await references.refuse_group_change(session, principal.tenant_id, meter.id, meter.key, meter.group_by,
                                             data.group_by)
    return meter_read(await service.update(session, principal.tenant_id, meter_key, data, actor=principal.key_id, at=utcnow()))


@router.delete("/{meter_key}", status_code=204)
async def delete_meter(meter_key: str, principal: Admin, session: WriteSession) -> Response:
    meter = await service.get(session, principal.tenant_id, meter_key)
    await references.refuse_meter_in_use(session, principal.tenant_id, meter.id, meter_key)
    await service.delete(session, principal.tenant_id, meter_key, actor=principal.key_id, at=utcnow())
    return Response(status_code=204)


_FROM = "Start of the range (inclusive); left out: the meter's first event."
_TO = "End of the range (exclusive); left out: now."
_WINDOW_SIZE = "Rows per MINUTE, HOUR, DAY or MONTH window; left out: one row for the whole range."
_ZONE = "IANA time zone the windows are aligned in (days from local midnight, DST included)."
_SUBJECT = "Only these subjects' events."
_CUSTOMER = "Only the events of subjects these customers (by key or id) own."
_GROUP_BY = "Groups of the meter, or `subject` or `customer`, to give rows of their own."
_FILTER_GROUP_BY = "Only events whose group (of the meter, or `subject` or `customer`) has one of these values."


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: AwareInstant | None = Field(default=None, alias="from", description=_FROM)
    to: AwareInstant | None = Field(default=None, description=_TO)
    window_size: WindowSize | None = Field(default=None, description=_WINDOW_SIZE)
    window_time_zone: str = Field(default="UTC", description=_ZONE, json_schema_extra=TIME_ZONE_SCHEMA)
    subject: list[str] | None = Field(default=None, max_length=meter_query.MAX_FILTER_KEYS, description=_SUBJECT)
    customer: list[str] | None = Field(default=None, max_length=meter_query.MAX_FILTER_KEYS, description=_CUSTOMER)
    group_by: list[str] = Field(default_factory=list, description=_GROUP_BY)
    filter_group_by: dict[str, list[str]] = Field(
        default_factory=dict, description=_FILTER_GROUP_BY + " Values of one group are OR-ed, groups AND-ed."
    )


def parse_zone(name: str, field: str = "window_time_zone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed.on(field, f"'{name}' is not an IANA time zone") from None


def build_query(body: QueryBody, *, dense: bool = True) -> meter_query.MeterQuery:
    now = utcnow()
    to = as_utc(body.to) if body.to else now
    start = as_utc(body.from_) if body.from_ else None
    if start is not None and start >= to:
        raise ValidationFailed.on("from", "must be before 'to'")
    return meter_query.MeterQuery(
        start_us=to_micros(start) if start else None,
        end_us=to_micros(to),
        window_size=body.window_size,
        tz=parse_zone(body.window_time_zone),
        subjects=body.subject,
        customers=body.customer,
        group_by=body.group_by,
        filter_group_by=body.filter_group_by,
        dense=dense,
    )


async def run_query(session: ReadSession, tenant_id: str, meter_key: str, body: QueryBody) -> dict[str, Any]:
    """The query result as plain JSON-ready data (it can be tens of thousands of rows, so no
    per-row model validation; `QueryResult` documents the shape)."""
    meter = await service.get(session, tenant_id, meter_key)
    q = build_query(body)
    rows = await meter_query.query(session, tenant_id, meter, q)
    stamps: dict[int, str] = {}

    def stamp(us: int) -> str:
        text = stamps.get(us)
        if text is None:
            text = stamps[us] = from_micros(us).isoformat().replace("+00:00", "Z")
        return text

    # Filtered by one subject or one customer, every row is that one's: say so.
    only_subject = body.subject[0] if body.subject and len(set(body.subject)) == 1 else None
    only_customer = None
    if body.customer and len(set(body.customer)) == 1:  # named by key or id: shown by key
        only_customer = (await customers.get(session, tenant_id, body.customer[0])).customer.key
    return {
        "meter": meter.key,
        "aggregation": meter.aggregation,
        "window_size": body.window_size.value if body.window_size else None,
        "window_time_zone": body.window_time_zone,
        "from": stamp(q.start_us) if q.start_us is not None else None,
        "to": stamp(q.end_us),
        "data": [
            {
                "window_start": stamp(r.window_start_us),
                "window_end": stamp(r.window_end_us),
                "value": codec.optional_number(r.value),
                "subject": r.subject or only_subject,
                "customer": r.customer or only_customer,
                "group_by": r.groups,
            }
            for r in rows
        ],
    }


def as_csv(result: dict[str, Any], *, customer_column: str = "customer", groups: list[str] | None = None) -> Response:
    """The rows of `run_query`'s result as CSV, one column per group: `groups` (those the query
    asked for, so an answer without rows has them too), else those the rows name (OpenMeter's CSV
    is the same with its customer column named `customer_id`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if groups is None:
        groups = sorted({name for row in result["data"] for name in row["group_by"]})
    writer.writerow(["window_start", "window_end", "subject", customer_column, *groups, "value"])
    for row in result["data"]:
        writer.writerow(
            [row["window_start"], row["window_end"], row["subject"] or "", row["customer"] or "",
             *[row["group_by"].get(g) or "" for g in groups], _csv_number(row["value"])]
        )
    return Response(out.getvalue(), media_type="text/csv")


def _csv_number(value: float | Decimal | None) -> str:
    """Plain decimals, as spreadsheets and billing imports read them: a double's shortest
    text may be in exponent form (`1e-06`), which names the same number but not as a sheet shows it."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)) if isinstance(value, float) else value, "f")


@router.get("/{meter_key}/query", response_model=QueryResult, responses={200: {"content": {"text/csv": {}}}})
async def query_meter(
    request: Request,
    meter_key: str,
    principal: Reader,
    session: ReadSession,
    from_: Annotated[AwareInstant | None, Query(alias="from", description=_FROM)] = None,
    to: Annotated[AwareInstant | None, Query(description=_TO)] = None,
    window_size: Annotated[WindowSize | None, Query(description=_WINDOW_SIZE)] = None,
    window_time_zone: Annotated[str, Query(description=_ZONE, json_schema_extra=TIME_ZONE_SCHEMA)] = "UTC",
    subject: Annotated[
        list[str] | None, Query(max_length=meter_query.MAX_FILTER_KEYS, description=_SUBJECT + " Repeatable.")
    ] = None,
    customer: Annotated[
        list[str] | None, Query(max_length=meter_query.MAX_FILTER_KEYS, description=_CUSTOMER + " Repeatable.")
    ] = None,
    group_by: Annotated[list[str] | None, Query(description=_GROUP_BY + " Repeatable.")] = None,
    filter_group_by: Annotated[list[Annotated[str, Field(json_schema_extra={"pattern": "^[^:\\u0000]*:[^\\u0000]*$"})]] | None, Query(
        description=_FILTER_GROUP_BY + " `name:value`, repeatable; values of one name are OR-ed, names AND-ed."
    )] = None,
    format: Annotated[str | None, Query(
        pattern="^(json|csv)$", description="json or csv; left out: CSV when `Accept` names text/csv."
    )] = None,
) -> Response:
    """Meter values per window, from rollups. `format=csv` (or `Accept: text/csv`) gives CSV.

    With `window_size`, each row names a whole window of `window_time_zone` (a day from local
    midnight to local midnight, a month the calendar month), even where `from` or `to` fall
    inside it; its value counts only the events within [`from`, `to`). Without `from`, the range
    starts at the meter's first event; without `to`, it ends now."""
    filters: dict[str, list[str]] = {}
    for item in filter_group_by or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValidationFailed.on("filter_group_by", f"'{item}' must be 'name:value'")
        filters.setdefault(name, []).append(value)
    body = QueryBody(
        **{"from": from_}, to=to, window_size=window_size, window_time_zone=window_time_zone,
        subject=subject, customer=customer, group_by=group_by or [], filter_group_by=filters,
    )
    result = await run_query(session, principal.tenant_id, meter_key, body)
    if format == "csv" or (format is None and _wants_csv(request)):
        return as_csv(result, groups=_csv_groups(body))
    return Json(result)


def _wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def _csv_groups(body: QueryBody) -> list[str]:
    """The CSV's group columns: the groups the query asked for, but subject and customer
    (which have columns of their own)."""
    return list(dict.fromkeys(g for g in body.group_by if g not in meter_query.SPECIAL_GROUPS))


@router.post(
    "/{meter_key}/query", response_model=QueryResult, responses={200: {"content": {"text/csv": {}}}}
)
async def query_meter_post(
    request: Request, meter_key: str, body: QueryBody, principal: Reader, session: ReadSession
) -> Response:
    """The same query with a JSON body (handy for long subject or customer lists); with
    `Accept: text/csv`, answered in CSV."""
    result = await run_query(session, principal.tenant_id, meter_key, body)
    if _wants_csv(request):
        return as_csv(result, groups=_csv_groups(body))
    return Json(result)
