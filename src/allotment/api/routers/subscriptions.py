"""Subscriptions (`/v1/subscriptions`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

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
from allotment.entitlements import subscriptions as service
from allotment.entitlements.schemas import Cancel, ChangePlan, SubscriptionCreate, SubscriptionRead
from allotment.types import utcnow

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
_LIST = "/v1/subscriptions"


def subscription_read(view: service.SubscriptionView) -> SubscriptionRead:
    s = view.subscription
    return SubscriptionRead(
        id=s.id, customer=view.customer_key, plan=view.plan.key, plan_version=view.plan.version,
        status=service.status_at(s, utcnow()),  # type: ignore[arg-type]
        starts_at=s.starts_at, ends_at=s.ends_at, billing_anchor=s.billing_anchor,
        time_zone=s.time_zone, created_at=s.created_at,
    )


@router.post("", status_code=201, response_model=SubscriptionRead)
async def create_subscription(
    data: SubscriptionCreate, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """Put a customer on the latest published version of a plan; its entitlements follow."""
    view = await service.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())
    return await idem.respond(201, subscription_read(view))


@router.get("", response_model=Page[SubscriptionRead])
async def list_subscriptions(
    principal: Reader,
    session: ReadSession,
    customer: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    rows = await service.list_(
        session, principal.tenant_id, customer_key=customer, after=decode_cursor(cursor, of=_LIST), limit=limit
    )
    return page(
        [subscription_read(v) for v in rows],
        rows, limit=limit, position=lambda r: r.subscription.id, of=_LIST,
    )


@router.get("/{subscription_id}", response_model=SubscriptionRead)
async def get_subscription(subscription_id: str, principal: Reader, session: ReadSession) -> SubscriptionRead:
    return subscription_read(await service.get(session, principal.tenant_id, subscription_id))


@router.post("/{subscription_id}/change-plan", response_model=SubscriptionRead)
async def change_plan(
    subscription_id: str, data: ChangePlan, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """Now, or at the end of the current billing period; returns the new subscription. A retry
    with the same `Idempotency-Key` gets this answer again."""
    view = await service.change_plan(
        session, principal.tenant_id, subscription_id, data.plan, when=data.at,
        actor=principal.key_id, at=utcnow(),
    )
    return await idem.respond(200, subscription_read(view))


@router.post("/{subscription_id}/cancel", response_model=SubscriptionRead)
async def cancel_subscription(
    subscription_id: str, data: Cancel, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    view = await service.cancel(
        session, principal.tenant_id, subscription_id, when=data.at, actor=principal.key_id, at=utcnow()
    )
    return await idem.respond(200, subscription_read(view))


@router.post("/{subscription_id}/migrate", response_model=SubscriptionRead)
async def migrate_subscription(
    subscription_id: str, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """Move to the latest published version of the subscription's plan."""
    view = await service.migrate(session, principal.tenant_id, subscription_id, actor=principal.key_id, at=utcnow())
    return await idem.respond(200, subscription_read(view))
