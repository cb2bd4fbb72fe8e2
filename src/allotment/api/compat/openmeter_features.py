"""OpenMeter features (`/api/v1/features`), over the native feature catalogue.

`meterSlug` is the key of the meter, `meterGroupByFilters` our meter group filter (one value
per group). Deleting a feature archives it, as in OpenMeter: entitlements that have it keep it.
The list is a bare array unless `page` or `pageSize` asks for OpenMeter's paginated shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.openmeter_http import (
    OptionalPage,
    OptionalPageSize,
    openmeter_fields,
    openmeter_router,
)
from allotment.api.compat.openmeter_schemas import FEATURE_FIELDS, FeatureCreateIn, feature_out
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import features
from allotment.entitlements.schemas import FeatureCreate
from allotment.errors import NotFound, ValidationFailed
from allotment.types import utcnow

router = openmeter_router()
_PAGE = 1000
_ORDER_BY = {
    "id": lambda v: v.feature.id,
    "key": lambda v: v.feature.key,
    "name": lambda v: v.feature.name,
    "createdAt": lambda v: v.feature.created_at,
    "updatedAt": lambda v: v.feature.updated_at,
}


@router.post("/v1/features", status_code=201)
async def create_feature(body: FeatureCreateIn, principal: Admin, session: WriteSession) -> Json:
    if body.unit_cost is not None:
        raise ValidationFailed.on("unitCost", "is not supported; price features on a plan instead")
    group_filter = dict(body.meter_group_by_filters or {})
    for name, condition in (body.advanced_meter_group_by_filters or {}).items():
        value = _single_value(name, condition)
        if group_filter.get(name, value) != value:
            raise ValidationFailed.on(
                f"advancedMeterGroupByFilters.{name}", "contradicts meterGroupByFilters"
            )
        group_filter[name] = value
    with openmeter_fields(FEATURE_FIELDS):
        data = FeatureCreate(
            key=body.key,
            name=body.name,
            meter=body.meter_slug,
            meter_group_filter=group_filter,
            metadata=body.metadata or {},
        )
        try:
            view = await features.create(
                session, principal.tenant_id, data, actor=principal.key_id, at=utcnow()
            )
        except NotFound as exc:
            if exc.kind != "meter":
                raise
            raise ValidationFailed.on("meterSlug", f"meter '{exc.key}' not found") from None
    return Json(feature_out(view), status_code=201)


def _single_value(name: str, condition: object) -> str:
    """A feature counts one value of a group: `{"$eq": v}` or `{"$in": [v]}`."""
    if isinstance(condition, dict) and len(condition) == 1:
        op, value = next(iter(condition.items()))
        if op == "$in" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        if op in ("$eq", "$in") and isinstance(value, str):
            return value
    raise ValidationFailed.on(
        f"advancedMeterGroupByFilters.{name}", 'only {"$eq": "value"} is supported'
    )


@router.get("/v1/features")
async def list_features(
    principal: Reader,
    session: ReadSession,
    meter_slug: Annotated[list[str] | None, Query(alias="meterSlug")] = None,
    include_archived: Annotated[bool, Query(alias="includeArchived")] = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    order: Literal["ASC", "DESC"] = "ASC",
    order_by: Annotated[
        Literal["id", "key", "name", "createdAt", "updatedAt"], Query(alias="orderBy")
    ] = "id",
) -> Json:
    views = await _all_features(session, principal.tenant_id, include_archived)
    if meter_slug:
        views = [v for v in views if v.meter_key in meter_slug]
    views.sort(key=_ORDER_BY[order_by], reverse=order == "DESC")
    if page is None and page_size is None:
        end = None if limit is None else offset + limit
        return Json([feature_out(v) for v in views[offset:end]])
    size, index = page_size or 100, page or 1
    return Json(
        {
            "items": [feature_out(v) for v in views[(index - 1) * size : index * size]],
            "page": index,
            "pageSize": size,
            "totalCount": len(views),
        }
    )


async def _all_features(
    session: AsyncSession, tenant_id: str, include_archived: bool
) -> list[features.FeatureView]:
    out: list[features.FeatureView] = []
    while True:
        after = out[-1].feature.id if out else None
        chunk = await features.list_(
            session, tenant_id, after=after, limit=_PAGE, include_archived=include_archived
        )
        out += chunk
        if len(chunk) < _PAGE:
            return out


@router.get("/v1/features/{feature_id}")
async def get_feature(feature_id: str, principal: Reader, session: ReadSession) -> Json:
    """By id or key; an archived feature too (with its `archivedAt`)."""
    feature = await features.get(session, principal.tenant_id, feature_id, archived=True)
    return Json(feature_out(await features.view(session, principal.tenant_id, feature)))


@router.delete("/v1/features/{feature_id}", status_code=204)
async def archive_feature(feature_id: str, principal: Admin, session: WriteSession) -> Response:
    await features.archive(
        session, principal.tenant_id, feature_id, actor=principal.key_id, at=utcnow()
    )
    return Response(status_code=204)
