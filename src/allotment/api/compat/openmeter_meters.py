"""OpenMeter meters (`/api/v1/meters`) and their queries.

A meter's `slug` is our key. Queries use OpenMeter's semantics: only windows with data are
listed, each the whole window of the time zone (counting only `from`..`to`); without a window
size the one window spans `from`..`to`; `groupBy` may name the
reserved groups `subject` and `customer_id` (our `customer` group, answered as `customerId`),
and filtering by `subject` or `filterCustomerId` groups by it too.
`PUT` may change a meter's `groupBy`, as OpenMeter allows: its whole history is regrouped
(docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.openmeter_customers import (
    customer_ids,
    known_customers,
    unknown_customer_is_invalid,
)
from allotment.api.compat.openmeter_http import (
    OptionalPage,
    OptionalPageSize,
    filter_group_by,
    json_param,
    openmeter_fields,
    openmeter_router,
    utc,
    values_of,
    zone,
)
from allotment.api.compat.openmeter_schemas import (
    METER_FIELDS,
    QUERY_FIELDS,
    MeterCreateIn,
    MeterQueryIn,
    MeterUpdateIn,
    meter_out,
    row_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.api.routers.meters import as_csv
from allotment.entitlements import references
from allotment.errors import Conflict, ValidationFailed
from allotment.metering import meters
from allotment.metering import query as meter_query
from allotment.metering.models import Meter
from allotment.metering.schemas import MeterCreate, MeterUpdate
from allotment.metering.windows import WindowSize
from allotment.types import Instant, from_micros, to_micros, utcnow

router = openmeter_router()
_PAGE = 1000
# OpenMeter's reserved group names -> ours; `subject` is the same in both.
_GROUPS = {"customer_id": "customer"}
_RESERVED_GROUPS = ("subject", "customer_id", "customer")  # refused as filters by `_filters`
# The longest a window can last (days and months in any time zone, DST included).
_LONGEST_WINDOW = {
    WindowSize.MINUTE: timedelta(minutes=1),
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(hours=25),
    WindowSize.MONTH: timedelta(days=31, hours=1),
}
_ORDER_BY = {
    "key": lambda m: m.key,
    "name": lambda m: m.name,
    "aggregation": lambda m: m.aggregation,
    "createdAt": lambda m: m.created_at,
    "updatedAt": lambda m: m.updated_at,
}


@router.get("/v1/meters")
async def list_meters(
    principal: Reader,
    session: ReadSession,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    order: Literal["ASC", "DESC"] = "ASC",
    order_by: Annotated[
        Literal["key", "name", "aggregation", "createdAt", "updatedAt"] | None,
        Query(alias="orderBy"),
    ] = None,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> Json:
    """A bare JSON array (the SDK refuses anything else), in creation order unless `orderBy`;
    deleted meters only with `includeDeleted` (marked by their `deletedAt`)."""
    rows = await _all_meters(session, principal.tenant_id, include_deleted=include_deleted)
    if order_by is not None or order == "DESC":
        rows.sort(key=_ORDER_BY[order_by or "createdAt"], reverse=order == "DESC")
    if page is not None or page_size is not None:
        size = page_size or 100
        start = ((page or 1) - 1) * size
        rows = rows[start : start + size]
    return Json([meter_out(m) for m in rows])


async def _all_meters(session: AsyncSession, tenant_id: str, *, include_deleted: bool = False) -> list[Meter]:
    out: list[Meter] = []
    while True:
        chunk = await meters.list_(
            session, tenant_id, after=out[-1].id if out else None, limit=_PAGE, include_deleted=include_deleted
        )
        out += chunk
        if len(chunk) < _PAGE:
            return out


@router.post("/v1/meters", status_code=201)
async def create_meter(body: MeterCreateIn, principal: Admin, session: WriteSession) -> Json:
    """Events already stored are counted at once, as on the native API; with `eventFrom`, only
    those from then on (and so are events reported later)."""
    with openmeter_fields(METER_FIELDS):
        data = MeterCreate.model_validate(
            {
                "key": body.slug,
                "name": body.name,
                "description": body.description,
                "event_type": body.event_type,
                "aggregation": body.aggregation.upper(),
                "value_property": body.value_property,
                "group_by": body.group_by,
                "event_from": body.event_from,
                "metadata": body.metadata,
            }
        )
        meter, _ = await meters.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())
    return Json(meter_out(meter), status_code=201)


@router.get("/v1/meters/{meter_id_or_slug}")
async def get_meter(meter_id_or_slug: str, principal: Reader, session: ReadSession) -> Json:
    return Json(meter_out(await meters.get(session, principal.tenant_id, meter_id_or_slug)))


@router.put("/v1/meters/{meter_id_or_slug}")
async def update_meter(
    meter_id_or_slug: str, body: MeterUpdateIn, principal: Admin, session: WriteSession
) -> Json:
    """Name, description, `metadata` and `groupBy`, as OpenMeter allows (name, metadata and
    groupBy left out are kept; a description left out is cleared). A changed `groupBy` regroups the
    meter's whole history (its rollups are rebuilt from the stored events), so a query by a new
    group covers events ingested before the change; a group a live feature filters on must stay
    as it is (409 naming `groupBy.<name>` and the feature)."""
    tenant_id = principal.tenant_id
    meter = await meters.get(session, tenant_id, meter_id_or_slug)
    with openmeter_fields(METER_FIELDS):
        named: dict[str, Any] = {} if body.name is None else {"name": body.name}  # left out: kept
        if body.group_by is not None:
            named["group_by"] = body.group_by
        if body.metadata is not None:
            named["metadata"] = body.metadata
        data = MeterUpdate.model_validate({"description": body.description, **named})
        if data.group_by is not None:
            with _openmeter_group_names():
                await references.refuse_group_change(session, tenant_id, meter.id, meter.key, meter.group_by,
                                                     data.group_by)
        meter = await meters.update(session, tenant_id, meter.id, data, actor=principal.key_id, at=utcnow())
    return Json(meter_out(meter))


@contextmanager
def _openmeter_group_names() -> Iterator[None]:
    """A refusal names the group as an OpenMeter client sent it: `groupBy.<name>`."""
    try:
        yield
    except Conflict as exc:
        for error in exc.errors:
            error.field = error.field.replace("group_by.", "groupBy.", 1)
        exc.detail = exc.detail.replace("group_by.", "groupBy.")
        raise


@router.delete("/v1/meters/{meter_id_or_slug}", status_code=204)
async def delete_meter(meter_id_or_slug: str, principal: Admin, session: WriteSession) -> Response:
    meter = await meters.get(session, principal.tenant_id, meter_id_or_slug)
    await references.refuse_meter_in_use(session, principal.tenant_id, meter.id, meter.key)
    await meters.delete(session, principal.tenant_id, meter_id_or_slug, actor=principal.key_id, at=utcnow())
    return Response(status_code=204)


_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}


@router.get("/v1/meters/{meter_id_or_slug}/query", responses=_CSV)
async def query_meter(
    request: Request,
    meter_id_or_slug: str,
    principal: Reader,
    session: ReadSession,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
    window_size: Annotated[WindowSize | None, Query(alias="windowSize")] = None,
    window_time_zone: Annotated[str, Query(alias="windowTimeZone")] = "UTC",
    subject: Annotated[list[str] | None, Query()] = None,
    filter_customer_id: Annotated[list[str] | None, Query(alias="filterCustomerId")] = None,
    group_by: Annotated[list[str] | None, Query(alias="groupBy")] = None,
    advanced_filters: Annotated[str | None, Query(alias="advancedMeterGroupByFilters")] = None,
) -> Response:
    """`filterGroupBy` is read from the raw query string: `{'model': 'gpt-4'}` (Python SDK),
    JSON, or `filterGroupBy[model]=gpt-4`. CSV with `Accept: text/csv`."""
    spec = MeterQueryIn.model_validate(
        {
            "from": from_,
            "to": to,
            "windowSize": window_size,
            "windowTimeZone": window_time_zone,
            "subject": subject,
            "filterCustomerId": filter_customer_id,
            "filterGroupBy": filter_group_by(request.query_params),
            "advancedMeterGroupByFilters": json_param(
                "advancedMeterGroupByFilters", advanced_filters
            ),
            "groupBy": group_by,
        }
    )
    return _answer(request, await _query(session, principal.tenant_id, meter_id_or_slug, spec))


@router.post("/v1/meters/{meter_id_or_slug}/query", responses=_CSV)
async def query_meter_post(
    request: Request,
    meter_id_or_slug: str,
    principal: Reader,
    session: ReadSession,
    body: MeterQueryIn | None = None,
) -> Response:
    """The same query with a JSON body (`filterGroupBy` values may be lists, OR-ed)."""
    return _answer(
        request,
        await _query(session, principal.tenant_id, meter_id_or_slug, body or MeterQueryIn()),
    )


def _answer(request: Request, result: dict[str, Any]) -> Response:
    """JSON, or the native CSV when the client asks for it (the SDK's `query_csv` does)."""
    if "text/csv" not in request.headers.get("accept", ""):
        return Json(result)
    rows = [
        {
            "window_start": _stamp(row["windowStart"]),
            "window_end": _stamp(row["windowEnd"]),
            "subject": row["subject"],
            "customer": row.get("customerId"),
            "group_by": row["groupBy"],
            "value": row["value"],
        }
        for row in result["data"]
    ]
    return as_csv({"data": rows}, customer_column="customer_id")


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@router.get("/v1/meters/{meter_id_or_slug}/subjects")
async def list_meter_subjects(
    meter_id_or_slug: str,
    principal: Reader,
    session: ReadSession,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
) -> Json:
    """Subjects with usage on the meter in the range, sorted."""
    spec = MeterQueryIn.model_validate({"from": from_, "to": to, "groupBy": ["subject"]})
    result = await _query(session, principal.tenant_id, meter_id_or_slug, spec)
    return Json(sorted({row["subject"] for row in result["data"] if row["subject"] is not None}))


@router.get("/v1/meters/{meter_id_or_slug}/group-by/{group_by_key}/values")
async def list_group_by_values(
    meter_id_or_slug: str,
    group_by_key: str,
    principal: Reader,
    session: ReadSession,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
) -> Json:
    spec = MeterQueryIn.model_validate({"from": from_, "to": to, "groupBy": [group_by_key]})
    result = await _query(session, principal.tenant_id, meter_id_or_slug, spec)
    values = {_group_value(row, group_by_key) for row in result["data"]}
    return Json(sorted(v for v in values if v is not None))


def _group_value(row: dict[str, Any], name: str) -> str | None:
    if name == "subject":
        return row["subject"]  # type: ignore[no-any-return]
    if name == "customer_id":
        return row.get("customerId")
    return row["groupBy"].get(name)  # type: ignore[no-any-return]


async def _query(
    session: AsyncSession, tenant_id: str, meter_key: str, spec: MeterQueryIn
) -> dict[str, Any]:
    meter = await meters.get(session, tenant_id, meter_key)
    _require_groups(meter, spec)
    if spec.filter_customer_id is not None:  # unknown customers match nothing, as in OpenMeter
        known = await known_customers(session, tenant_id, spec.filter_customer_id)
        spec = spec.model_copy(update={"filter_customer_id": known})
    q = _meter_query(spec)
    rows = []
    if q.customers != []:
        with openmeter_fields(QUERY_FIELDS), unknown_customer_is_invalid("filterCustomerId"):
            rows = await meter_query.query(session, tenant_id, meter, q)
    ids = await customer_ids(session, tenant_id, {r.customer for r in rows if r.customer})
    return {
        **({"from": from_micros(q.start_us)} if q.start_us is not None else {}),
        "to": from_micros(q.end_us),
        "windowSize": spec.window_size,
        "data": [row_out(r, ids) for r in rows],
    }


def _meter_query(spec: MeterQueryIn) -> meter_query.MeterQuery:
    start, end = utc(spec.from_), utc(spec.to) or utcnow()
    if start is not None and start >= end:
        raise ValidationFailed.on("from", "must be before 'to'")
    if start is not None and spec.window_size is not None:
        _check_window_count(start, end, spec.window_size)
    # As in OpenMeter, naming subjects or customers also groups by them: one row for each.
    implied = ["subject"] * (spec.subject is not None) + ["customer_id"] * bool(spec.filter_customer_id)
    group_by = list(dict.fromkeys(_GROUPS.get(g, g) for g in [*(spec.group_by or ()), *implied]))
    return meter_query.MeterQuery(
        start_us=to_micros(start) if start else None,
        end_us=to_micros(end),
        window_size=spec.window_size,
        tz=zone(spec.window_time_zone or "UTC"),
        subjects=spec.subject,
        customers=spec.filter_customer_id,
        group_by=group_by,
        filter_group_by=_filters(spec),
        dense=False,
    )


def _require_groups(meter: Meter, spec: MeterQueryIn) -> None:
    """A filter on a group the meter does not have is refused naming the filter that holds it."""
    for field, filters in (("filterGroupBy", spec.filter_group_by),
                           ("advancedMeterGroupByFilters", spec.advanced_meter_group_by_filters)):
        for name in filters or {}:
            if name not in (meter.group_by or {}) and name not in _RESERVED_GROUPS:
                raise ValidationFailed.on(f"{field}.{name}", f"'{name}' is not a group of meter '{meter.key}'")


def _check_window_count(start: datetime, end: datetime, size: WindowSize) -> None:
    """Refuses at once a range that surely holds too many windows, instead of planning them
    one by one first (a minute window over decades would take the planner a long time)."""
    at_least = (end - start) / _LONGEST_WINDOW[size] - 1
    if at_least > meter_query.MAX_WINDOWS:
        raise ValidationFailed.on(
            "windowSize",
            f"the range has over {int(at_least)} windows; at most {meter_query.MAX_WINDOWS}",
        )


def _filters(spec: MeterQueryIn) -> dict[str, list[str]]:
    """Simple and advanced group filters, AND-ed; the values of one filter are OR-ed."""
    out = {
        name: values_of("filterGroupBy", name, value)
        for name, value in (spec.filter_group_by or {}).items()
    }
    for name, condition in (spec.advanced_meter_group_by_filters or {}).items():
        values = _advanced(name, condition)
        out[name] = [v for v in out[name] if v in values] if name in out else values
    for name in out:
        if name in ("subject", "customer_id", "customer"):
            raise ValidationFailed.on(
                f"filterGroupBy.{name}",
                "filter subjects with `subject`, customers with `filterCustomerId`",
            )
    return out


def _advanced(name: str, condition: object) -> list[str]:
    field = f"advancedMeterGroupByFilters.{name}"
    if isinstance(condition, dict) and len(condition) == 1:
        op, value = next(iter(condition.items()))
        if op == "$eq" and not isinstance(value, list):
            return values_of("advancedMeterGroupByFilters", name, value)
        if op == "$in" and isinstance(value, list):
            return values_of("advancedMeterGroupByFilters", name, value)
    raise ValidationFailed.on(field, 'only {"$eq": value} and {"$in": [values]} are supported')
