"""Upsell suggestions: one customer's (`/v1/customers/{key}/upsell`) and the sales report."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from allotment.api.deps import Cursor, Limit, Reader, ReadSession, decode_cursor, encode_cursor
from allotment.entitlements import upsell as service
from allotment.types import utcnow

router = APIRouter(tags=["upsell"])
_LIST = "/v1/reports/upsell"


@router.get("/v1/customers/{customer_key}/upsell")
async def customer_upsell(customer_key: str, principal: Reader, session: ReadSession) -> dict[str, object]:
    """Each metered and seats feature of the customer: usage, limits, projection to the period
    end and what would cover it (`suggestion.action` is `none` when the projection fits).

    A customer has at most one entitlement per feature, so the list is never paged.
    """
    found = await service.for_customer(session, principal.tenant_id, customer_key, at=utcnow())
    return {"items": [service.read(s) for s in found], "next_cursor": None}


@router.get("/v1/reports/upsell")
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
