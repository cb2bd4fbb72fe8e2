"""Upsell suggestions: one customer's (`/v1/customers/{key}/upsell`) and the sales report."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from allotment.api.deps import (
    Cursor,
    Limit,
    Reader,
    ReadSession,
    decode_cursor,
    decode_pair_cursor,
    encode_cursor,
    page,
    pair_position,
)
from allotment.api.pages import Page
from allotment.entitlements import upsell as service
from allotment.entitlements.schemas import UpsellRead
from allotment.types import utcnow

router = APIRouter(tags=["upsell"])
_LIST = "/v1/reports/upsell"
_CUSTOMER_LIST = "/v1/customers/{customer_key}/upsell"


@router.get("/v1/customers/{customer_key}/upsell", response_model=Page[UpsellRead])
async def customer_upsell(
    customer_key: str, principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    """Each metered and seats feature of the customer, by feature key: usage, limits,
    projection to the period end and what would cover it (`suggestion.action` is `none` when
    the projection fits).

    Paged as every list is, although a customer holds one entitlement per feature.
    """
    found = await service.for_customer(session, principal.tenant_id, customer_key, at=utcnow(),
                                       limit=limit, after=decode_pair_cursor(cursor, of=_CUSTOMER_LIST))
    return page([service.read(s) for s in found], found, limit=limit,
                position=lambda s: pair_position(s.feature_key, s.row.feature_id), of=_CUSTOMER_LIST)


@router.get("/v1/reports/upsell", response_model=Page[UpsellRead])
async def upsell_report(
    principal: Reader,
    session: ReadSession,
    status: Literal["near_limit", "overdraft", "denied"] | None = None,
    feature: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Upsell candidates this period: at 80 % of the soft limit or more, past it, or denied.

    `status` keeps those in one condition (`overdraft` includes denied customers still past
    their soft limit); `feature` one feature (key or id). Ordered by entitlement id.
    """
    found, after = await service.report(
        session, principal.tenant_id, at=utcnow(), status=None if status is None else service.Status(status),
        feature=feature, after=decode_cursor(cursor, of=_LIST), limit=limit,
    )
    return {
        "items": [service.read(s) for s in found],
        "next_cursor": None if after is None else encode_cursor(after, of=_LIST),
    }
