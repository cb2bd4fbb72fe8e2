"""Subscriptions: a customer on one plan version over time, with a billing anchor and zone.

A plan change or cancellation "now" ends the subscription at `at`; "at period end" ends it at
the end of the current billing period, computed in the subscription's time zone, and a plan
change starts a scheduled subscription there. Every change re-provisions the customer's
entitlements in the same transaction and is written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.entitlements import audit, plans, provisioning
from allotment.entitlements.models import Plan, Subscription
from allotment.entitlements.periods import UsagePeriod, period_at
from allotment.entitlements.schemas import SubscriptionCreate
from allotment.errors import Conflict, NotFound
from allotment.types import new_id

When = Literal["now", "period_end"]


@dataclass
class SubscriptionView:
    subscription: Subscription
    customer_key: str
    plan: Plan


def status_at(sub: Subscription, at: datetime) -> str:
    """What the subscription is at `at`: stored status moves on with time without a writer."""
    if sub.status == "canceled" or (sub.ends_at is not None and sub.ends_at <= at):
        return "canceled"
    return "scheduled" if sub.starts_at > at else "active"


def billing_period_end(sub: Subscription, plan: Plan, at: datetime) -> datetime:
    """End of the billing period containing `at`, in the subscription's time zone."""
    _, end = period_at(UsagePeriod(plans.billing_period(plan), sub.billing_anchor, ZoneInfo(sub.time_zone)), at)
    assert end is not None  # only NONE periods never end
    return end


async def _view(session: AsyncSession, sub: Subscription) -> SubscriptionView:
    customer = await customers.find(session, sub.tenant_id, sub.customer_id)
    return SubscriptionView(sub, customer.key, await plans.by_id(session, sub.tenant_id, sub.plan_id))


async def _get(session: AsyncSession, tenant_id: str, sub_id: str) -> Subscription:
    sub = await session.get(Subscription, sub_id)
    if sub is None or sub.tenant_id != tenant_id:
        raise NotFound("subscription", sub_id)
    return sub


async def get(session: AsyncSession, tenant_id: str, sub_id: str) -> SubscriptionView:
    return await _view(session, await _get(session, tenant_id, sub_id))


async def create(
    session: AsyncSession, tenant_id: str, data: SubscriptionCreate, *, actor: str, at: datetime
) -> SubscriptionView:
    customer = await customers.find(session, tenant_id, data.customer)
    plan = await plans.latest_published(session, tenant_id, data.plan)
    existing = await provisioning.current_subscriptions(session, tenant_id, customer.id, at)
    if existing:
        raise Conflict(
            f"customer '{customer.key}' already has subscription '{existing[0].id}';"
            " change its plan instead"
        )
    starts_at = data.starts_at or at
    sub = _new(
        tenant_id, customer.id, plan, starts_at=starts_at,
        billing_anchor=data.billing_anchor or starts_at, time_zone=data.time_zone, at=at,
    )
    return await _added(session, sub, actor=actor, at=at)


def _new(
    tenant_id: str,
    customer_id: str,
    plan: Plan,
    *,
    starts_at: datetime,
    billing_anchor: datetime,
    time_zone: str,
    at: datetime,
) -> Subscription:
    return Subscription(
        id=new_id("sub"), tenant_id=tenant_id, customer_id=customer_id, plan_id=plan.id,
        status="scheduled" if starts_at > at else "active", starts_at=starts_at, ends_at=None,
        billing_anchor=billing_anchor, time_zone=time_zone, created_at=at,
    )


async def _added(
    session: AsyncSession, sub: Subscription, *, actor: str, at: datetime
) -> SubscriptionView:
    session.add(sub)
    await session.flush()
    await provisioning.reprovision(session, sub.tenant_id, sub.customer_id, actor=actor, at=at)
    await _audit(session, "subscription.created", sub, None, actor=actor, at=at)
    return await _view(session, sub)


async def _in_force(session: AsyncSession, tenant_id: str, sub_id: str, at: datetime) -> Subscription:
    sub = await _get(session, tenant_id, sub_id)
    if status_at(sub, at) != "active":
        raise Conflict(f"subscription '{sub_id}' is {status_at(sub, at)}, not active")
    return sub


async def change_plan(
    session: AsyncSession,
    tenant_id: str,
    sub_id: str,
    plan_key: str,
    *,
    when: When,
    actor: str,
    at: datetime,
) -> SubscriptionView:
    """Returns the subscription that carries the new plan (active now, or scheduled)."""
    sub = await _in_force(session, tenant_id, sub_id, at)
    plan = await plans.latest_published(session, tenant_id, plan_key)
    await _drop_scheduled(session, sub, actor=actor, at=at)
    before = audit.snapshot(sub)
    old_plan = await plans.by_id(session, tenant_id, sub.plan_id)
    switch = at if when == "now" else billing_period_end(sub, old_plan, at)
    sub.ends_at = switch
    if when == "now":
        sub.status = "canceled"
    await _audit(session, "subscription.plan_changed", sub, before, actor=actor, at=at)
    successor = _new(
        tenant_id, sub.customer_id, plan, starts_at=switch, billing_anchor=sub.billing_anchor,
        time_zone=sub.time_zone, at=at,
    )
    return await _added(session, successor, actor=actor, at=at)


async def cancel(
    session: AsyncSession, tenant_id: str, sub_id: str, *, when: When, actor: str, at: datetime
) -> SubscriptionView:
    """Ends the subscription, and any plan change scheduled after it, with its entitlements."""
    sub = await _get(session, tenant_id, sub_id)
    state = status_at(sub, at)
    if state == "canceled":
        raise Conflict(f"subscription '{sub_id}' is already canceled")
    before = audit.snapshot(sub)
    if state == "scheduled":
        sub.status, sub.ends_at = "canceled", sub.starts_at
    else:
        await _drop_scheduled(session, sub, actor=actor, at=at)
        plan = await plans.by_id(session, tenant_id, sub.plan_id)
        sub.ends_at = at if when == "now" else billing_period_end(sub, plan, at)
        sub.status = "canceled" if when == "now" else sub.status
    await session.flush()
    await provisioning.reprovision(session, tenant_id, sub.customer_id, actor=actor, at=at)
    await _audit(session, "subscription.canceled", sub, before, actor=actor, at=at)
    return await _view(session, sub)


async def migrate(
    session: AsyncSession, tenant_id: str, sub_id: str, *, actor: str, at: datetime
) -> SubscriptionView:
    """Move the subscription to the latest published version of its plan, at once."""
    sub = await _get(session, tenant_id, sub_id)
    if status_at(sub, at) == "canceled":
        raise Conflict(f"subscription '{sub_id}' is canceled")
    current = await plans.by_id(session, tenant_id, sub.plan_id)
    latest = await plans.latest_published(session, tenant_id, current.key)
    if latest.id == current.id:
        return await _view(session, sub)
    before = audit.snapshot(sub)
    sub.plan_id = latest.id
    await session.flush()
    await provisioning.reprovision(session, tenant_id, sub.customer_id, actor=actor, at=at)
    await _audit(session, "subscription.migrated", sub, before, actor=actor, at=at)
    return await _view(session, sub)


async def _drop_scheduled(
    session: AsyncSession, sub: Subscription, *, actor: str, at: datetime
) -> None:
    """A new change replaces any change already scheduled after `sub`."""
    for later in await provisioning.current_subscriptions(session, sub.tenant_id, sub.customer_id, at):
        if later.id != sub.id and later.starts_at > at:
            before = audit.snapshot(later)
            later.status, later.ends_at = "canceled", later.starts_at
            await _audit(session, "subscription.canceled", later, before, actor=actor, at=at)
    await session.flush()


async def _audit(
    session: AsyncSession,
    action: str,
    sub: Subscription,
    before: dict[str, object] | None,
    *,
    actor: str,
    at: datetime,
) -> None:
    await audit.record(
        session, sub.tenant_id, actor=actor, action=action, entity_type="subscription",
        entity_id=sub.id, before=before, after=audit.snapshot(sub), at=at,
    )


async def live_on(session: AsyncSession, tenant_id: str, plan_ids: list[str], at: datetime) -> list[Subscription]:
    """Subscriptions on any of these plan versions that are active or scheduled at `at`."""
    rows = await session.scalars(
        select(Subscription).where(
            Subscription.tenant_id == tenant_id, Subscription.plan_id.in_(plan_ids),
            Subscription.status != "canceled", (Subscription.ends_at.is_(None)) | (Subscription.ends_at > at),
        ).order_by(Subscription.id)
    )
    return list(rows)


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer_key: str | None,
    after: str | None,
    limit: int,
) -> list[SubscriptionView]:
    stmt = select(Subscription).where(Subscription.tenant_id == tenant_id)
    if customer_key is not None:
        customer = await customers.find(session, tenant_id, customer_key)
        stmt = stmt.where(Subscription.customer_id == customer.id)
    if after:
        stmt = stmt.where(Subscription.id > after)
    rows = await session.scalars(stmt.order_by(Subscription.id).limit(limit))
    return [await _view(session, s) for s in rows]
