"""OpenMeter grants on a customer's metered entitlement (`.../entitlements/{e}/grants`).

A thin adapter over the native grants service; the differences are OpenMeter's defaults:
- `expiration` `{duration, count}` becomes an expiry time counted from `effectiveAt`, in
  calendar units (a month from Jan 31 is the last day of February); none: never expires. It
  is kept too, and answered back as sent (7 DAY stays 7 DAY).
- `maxRolloverAmount` defaults to the grant's amount (the v2 API's default; v1 used 0), so a
  grant left untouched keeps its whole remainder across a reset; `minRolloverAmount` to 0.
- `effectiveAt` and the recurrence anchor are truncated to the minute, as OpenMeter does
  (usage is metered by the minute): usage earlier in the grant's first minute burns it.
- `recurrence` `{interval, anchor}` (anchor default: `effectiveAt`) steps in UTC, as OpenMeter
  does; reads show it with `nextRecurrence`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import Query
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.openmeter_http import (
    Limit,
    Offset,
    OptionalPage,
    OptionalPageSize,
    Window,
    openmeter_fields,
    openmeter_router,
    to_minute,
    utc,
)
from allotment.api.compat.openmeter_intervals import interval_of
from allotment.api.compat.openmeter_lookup import resolve, resolve_live
from allotment.api.compat.openmeter_schemas import (
    EXPIRY_CALENDAR,
    EXPIRY_STEPS,
    GRANT_FIELDS,
    ExpirationIn,
    GrantCreateIn,
    expiry,
    grant_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers.models import Customer
from allotment.entitlements import grants
from allotment.entitlements.models import GrantRecord
from allotment.entitlements.periods import UsagePeriod
from allotment.errors import ValidationFailed
from allotment.tenancy.service import Principal
from allotment.types import LATEST, OUT_OF_RANGE, utcnow, within_range

router = openmeter_router()
_PATH = "/v2/customers/{customer_id_or_key}/entitlements/{entitlement_id_or_feature_key}/grants"
_PAGE = 1000
_UTC = ZoneInfo("UTC")
ORDER_BY = {
    "id": lambda g: g.id,
    "createdAt": lambda g: (g.created_at, g.id),
    "updatedAt": lambda g: (g.voided_at or g.created_at, g.id),
}


@router.post(_PATH, status_code=201)
async def create_grant(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    body: GrantCreateIn,
    principal: Admin,
    session: WriteSession,
) -> Json:
    at, tenant_id = utcnow(), principal.tenant_id
    customer, row, feature_key = await resolve_live(
        session, tenant_id, customer_id_or_key, entitlement_id_or_feature_key, at
    )
    record = await issue(session, principal, customer, feature_key, body, at=at)
    return Json(grant_out(record, row.public_id, at), status_code=201)


async def issue(
    session: AsyncSession,
    principal: Principal,
    customer: Customer,
    feature_key: str,
    body: GrantCreateIn,
    *,
    at: datetime,
    field: str = "",
) -> GrantRecord:
    """Create one grant with OpenMeter's defaults; errors name fields under `field`."""
    effective = to_minute(utc(body.effective_at))
    assert effective is not None
    recurrence = None
    if body.recurrence is not None:
        interval = interval_of(body.recurrence.interval, f"{field}recurrence.interval")
        recurrence = UsagePeriod(interval, to_minute(utc(body.recurrence.anchor)) or effective, _UTC)
    names = {ours: field + theirs for ours, theirs in GRANT_FIELDS.items()}
    names["feature"] = "entitlementIdOrFeatureKey"
    with openmeter_fields(names):
        return await grants.create(
            session,
            principal.tenant_id,
            customer=customer.id,
            feature=feature_key,
            amount=body.amount,
            priority=body.priority,
            effective_at=effective,
            expires_at=expires_at(effective, body.expiration, field),
            expiration=None if body.expiration is None else {
                "duration": body.expiration.duration.upper(), "count": body.expiration.count,
            },
            min_rollover=body.min_rollover_amount,
            max_rollover=body.amount
            if body.max_rollover_amount is None
            else body.max_rollover_amount,
            recurrence=recurrence,
            metadata=body.metadata,
            annotations=body.annotations,
            at=at,
            actor=principal.key_id,
        )


def expires_at(
    effective: datetime, expiration: ExpirationIn | None, field: str = ""
) -> datetime | None:
    if expiration is None:
        return None
    unit = expiration.duration.upper()
    if unit not in EXPIRY_STEPS and unit not in EXPIRY_CALENDAR:
        raise ValidationFailed.on(
            f"{field}expiration.duration", "must be HOUR, DAY, WEEK, MONTH or YEAR"
        )
    try:
        end = expiry(effective, unit, expiration.count)
    except (OverflowError, ValueError):
        end = LATEST
    if not within_range(end):
        raise ValidationFailed.on(f"{field}expiration.count", f"expiry {OUT_OF_RANGE}")
    return end


@router.get(_PATH)
async def list_grants(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Offset = None,
    limit: Limit = None,
    order: Literal["ASC", "DESC"] = "ASC",
    order_by: Annotated[Literal["id", "createdAt", "updatedAt"], Query(alias="orderBy")] = "id",
) -> Json:
    """The customer's grants on the feature, paged by `page`/`pageSize` or `offset`/`limit`,
    voided ones too (with `voidedAt`), as OpenMeter lists them: `includeDeleted` is about deleted grants, and none is here (a grant belongs to
    the customer and feature, not to an entitlement that a delete could take it away with)."""
    at, tenant_id = utcnow(), principal.tenant_id
    customer, row, feature_key = await resolve(
        session, tenant_id, customer_id_or_key, entitlement_id_or_feature_key, at
    )
    records = await all_grants(session, tenant_id, customer.id, feature_key, at)
    records.sort(key=ORDER_BY[order_by], reverse=order == "DESC")
    window = Window(page, page_size, offset, limit, paged=True)
    shown = records[window.offset : window.offset + window.size]
    return window.answer([grant_out(r, row.public_id, at) for r in shown], len(records))


async def all_grants(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, at: datetime
) -> list[GrantRecord]:
    """The customer's grants on the feature, voided ones too."""
    out: list[GrantRecord] = []
    while True:
        chunk = await grants.list_(
            session, tenant_id, customer=customer, feature=feature, at=at,
            include_voided=True, after=out[-1].id if out else None, limit=_PAGE,
        )  # fmt: skip
        out += chunk
        if len(chunk) < _PAGE:
            return out
