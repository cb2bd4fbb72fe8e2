"""Lago billable metrics (`/billable_metrics`, keyed by `code`) are our meters.

`code` is the meter's key and the event type it counts (Lago events carry `code`);
`aggregation_type` maps to the meter's aggregation, `field_name` to its value property
`$.<field_name>` (properties are the event's data), and each filter key to a group-by
property of the same name (Lago's filters split usage by property values). Recurring
metrics, expressions, weighted sums and custom aggregations are not modelled: a 422 names
the field.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.lago_http import Page, PerPage, at, invalid, lago_router, meta
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import references
from allotment.errors import Conflict, NotFound
from allotment.metering import meters
from allotment.metering.models import Meter
from allotment.metering.schemas import MeterCreate, MeterUpdate
from allotment.types import utcnow

router = lago_router()

AGGREGATIONS = {"count_agg": "COUNT", "sum_agg": "SUM", "max_agg": "MAX",
                "unique_count_agg": "UNIQUE_COUNT", "latest_agg": "LATEST"}
_LAGO = {v: k for k, v in AGGREGATIONS.items()}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def aggregation_type(aggregation: str) -> str:
    """Lago's name; a meter made natively with one Lago lacks (MIN, AVG) answers it the same way."""
    return _LAGO.get(aggregation, aggregation.lower() + "_agg")


class _Filter(BaseModel):
    key: str = Field(min_length=1, max_length=64)
    values: list[str] | None = None


class LagoMetric(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=256)
    code: str | None = None
    description: str | None = Field(default=None, max_length=1024)
    aggregation_type: str | None = None
    field_name: str | None = Field(default=None, min_length=1, max_length=250)
    recurring: bool | None = None
    expression: str | None = None
    weighted_interval: str | None = None
    rounding_function: str | None = None
    filters: list[_Filter] | None = None


class MetricBody(BaseModel):
    billable_metric: LagoMetric


def _path(field_name: str) -> str:
    return f"$.{field_name}" if _PLAIN.match(field_name) else "$['" + field_name.replace("'", "\\'") + "']"


def _field_name(path: str | None) -> str | None:
    if path is None:
        return None
    if path.startswith("$['") and path.endswith("']"):
        return path[3:-2].replace("\\'", "'")
    return path.removeprefix("$.")


def metric_out(meter: Meter) -> dict[str, Any]:
    return {
        "lago_id": meter.id, "name": meter.name, "code": meter.key, "description": meter.description,
        "aggregation_type": aggregation_type(meter.aggregation), "field_name": _field_name(meter.value_property),
        "recurring": False, "expression": None, "weighted_interval": None,
        "rounding_function": None, "rounding_precision": None, "created_at": at(meter.created_at),
        "filters": [{"key": name, "values": []} for name in (meter.group_by or {})],
        "active_subscriptions_count": 0, "draft_invoices_count": 0, "plans_count": 0,
    }


def _unsupported(data: LagoMetric) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not data.code:
        out["code"] = ["value_is_mandatory"]
    if data.aggregation_type not in AGGREGATIONS:
        out["aggregation_type"] = [f"'{data.aggregation_type}' is not supported; use one of "
                                   + ", ".join(AGGREGATIONS)] if data.aggregation_type else ["value_is_mandatory"]
    elif data.aggregation_type != "count_agg" and not data.field_name:
        out["field_name"] = ["value_is_mandatory"]
    for name in ("expression", "weighted_interval", "rounding_function"):
        if getattr(data, name):
            out[name] = ["is not supported"]
    if data.recurring:
        out["recurring"] = ["is not supported"]
    return out


# Our meter fields under the names a Lago client sent them as.
_LAGO_NAMES = {"key": "code", "event_type": "code", "value_property": "field_name", "group_by": "filters"}


def _meter_create(data: LagoMetric) -> MeterCreate | dict[str, list[str]]:
    """The meter, or what is wrong with it under Lago's field names."""
    aggregation = AGGREGATIONS[data.aggregation_type or ""]
    try:
        return _meter(data, aggregation)
    except pydantic.ValidationError as exc:
        out: dict[str, list[str]] = {}
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "billable_metric"
            out.setdefault(_LAGO_NAMES.get(field, field), []).append(str(e["msg"]).removeprefix("Value error, "))
        return out


def _meter(data: LagoMetric, aggregation: str) -> MeterCreate:
    return MeterCreate(
        key=data.code or "", name=data.name or data.code, description=data.description,
        event_type=data.code or "", aggregation=aggregation,  # type: ignore[arg-type]
        value_property=None if aggregation == "COUNT" else _path(data.field_name or ""),
        group_by={f.key: _path(f.key) for f in data.filters or []},
    )


@router.post("/v1/billable_metrics", summary="Create a billable metric (Lago)")
async def create_metric(body: MetricBody, principal: Admin, session: WriteSession) -> Json:
    data = body.billable_metric
    if bad := _unsupported(data):
        return invalid(bad)
    spec = _meter_create(data)
    if isinstance(spec, dict):
        return invalid(spec)
    meter, _ = await meters.create(session, principal.tenant_id, spec, actor=principal.key_id, at=utcnow())
    return Json({"billable_metric": metric_out(meter)})


@router.get("/v1/billable_metrics/{code}", summary="One billable metric (Lago)")
async def get_metric(code: str, principal: Reader, session: ReadSession) -> Json:
    return Json({"billable_metric": metric_out(await _by_code(session, principal.tenant_id, code))})


async def _by_code(session: AsyncSession, tenant_id: str, code: str) -> Meter:
    try:
        return await meters.get(session, tenant_id, code)
    except NotFound:
        raise NotFound("billable_metric", code) from None


@router.get("/v1/billable_metrics", summary="Billable metrics, page by page (Lago)")
async def list_metrics(principal: Reader, session: ReadSession, page: Page = 1, per_page: PerPage = 20) -> Json:
    every: list[Meter] = []
    while batch := await meters.list_(session, principal.tenant_id, after=every[-1].id if every else None,
                                      limit=1000):
        every += batch  # a tenant has few meters: paged here, by Lago's page numbers
    chosen = every[(page - 1) * per_page : page * per_page]
    return Json({"billable_metrics": [metric_out(m) for m in chosen], "meta": meta(page, per_page, len(every))})


@router.put("/v1/billable_metrics/{code}", summary="Update a billable metric (Lago)")
async def update_metric(code: str, body: MetricBody, principal: Admin, session: WriteSession) -> Json:
    """Name, description and filters change; what decides the counting (code, aggregation,
    field) may be sent again unchanged, and a change of it is a 422 naming the field. New filter
    keys split the metric's whole history (the meter's group-by is rebuilt from the events); a
    key a live feature filters on stays (409)."""
    meter = await _by_code(session, principal.tenant_id, code)
    data, current = body.billable_metric, metric_out(meter)
    fixed = ("code", "aggregation_type", "field_name")
    changed = {f: ["cannot be changed"] for f in fixed if getattr(data, f) not in (None, current[f])}
    if changed:
        return invalid(changed)
    # The client sends every field, null when its caller left it out: null keeps the value.
    changes: dict[str, Any] = data.model_dump(exclude_none=True, include={"name", "description"})
    if data.filters is not None:
        changes["group_by"] = {f.key: _path(f.key) for f in data.filters}
        try:
            await references.refuse_group_change(session, principal.tenant_id, meter.id, meter.key,
                                                 meter.group_by, changes["group_by"])
        except Conflict as exc:  # named as the client sent them: filters.<key>
            return invalid({e.field.replace("group_by.", "filters.", 1): [e.message] for e in exc.errors})
    try:
        update = MeterUpdate(**changes)
    except pydantic.ValidationError as exc:
        return invalid({_LAGO_NAMES.get(str(e["loc"][0]), str(e["loc"][0])) if e["loc"] else "billable_metric":
                        [str(e["msg"]).removeprefix("Value error, ")] for e in exc.errors()})
    meter = await meters.update(session, principal.tenant_id, meter.id, update, actor=principal.key_id, at=utcnow())
    return Json({"billable_metric": metric_out(meter)})


@router.delete("/v1/billable_metrics/{code}", summary="Delete a billable metric (Lago)")
async def delete_metric(code: str, principal: Admin, session: WriteSession) -> Json:
    """The events stay; a metric a feature measures is refused (archive the feature first)."""
    meter = await _by_code(session, principal.tenant_id, code)
    out = metric_out(meter)
    await references.refuse_meter_in_use(session, principal.tenant_id, meter.id, meter.key)
    await meters.delete(session, principal.tenant_id, meter.id, actor=principal.key_id, at=utcnow())
    return Json({"billable_metric": out})
