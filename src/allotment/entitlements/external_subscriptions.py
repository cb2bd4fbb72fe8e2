"""Subscriptions as another billing system names them (Lago's `external_id`).

Such a system sends usage per subscription, not per customer: the external id becomes a
subject key of the customer, so its events are the customer's usage, and the native
subscription it starts provisions the plan's entitlements as any other subscription does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.customers.schemas import CustomerUpdate
from allotment.db import flush_unique
from allotment.entitlements import plans, subscriptions
from allotment.entitlements.models import ExternalSubscription, Subscription
from allotment.entitlements.schemas import SubscriptionCreate
from allotment.errors import Conflict, NotFound
from allotment.types import new_id


@dataclass
class ExternalView:
    row: ExternalSubscription
    customer_key: str
    native: Subscription | None

    def status_at(self, at: datetime) -> str:
        """Lago's words: pending (starts later), active, terminated."""
        if self.row.terminated_at is not None:
            return "terminated"
        if self.native is None:
            return "active"
        state = subscriptions.status_at(self.native, at)
        return {"scheduled": "pending", "canceled": "terminated"}.get(state, state)


async def _row(session: AsyncSession, tenant_id: str, system: str, external_id: str) -> ExternalSubscription | None:
    return await session.get(ExternalSubscription, (tenant_id, system, external_id))


async def _view(session: AsyncSession, row: ExternalSubscription) -> ExternalView:
    customer = await customers.keys_of(session, row.tenant_id, [row.customer_id])
    native = await session.get(Subscription, row.subscription_id) if row.subscription_id else None
    return ExternalView(row, customer[row.customer_id], native)


async def get(session: AsyncSession, tenant_id: str, system: str, external_id: str) -> ExternalView:
    row = await _row(session, tenant_id, system, external_id)
    if row is None:
        raise NotFound("subscription", external_id)
    return await _view(session, row)


async def start(
    session: AsyncSession, tenant_id: str, *, system: str, external_id: str, customer_key: str,
    plan_key: str, name: str | None, starts_at: datetime | None, actor: str, at: datetime,
    billing_anchor: datetime | None = None,
) -> tuple[ExternalView, bool]:
    """The subscription, and whether it is new: starting one again with the same customer
    and plan answers the one already started (a retry), never a second one. Once terminated,
    its external id may start a new subscription of the same customer (a new `lago_id`)."""
    customer = await customers.find(session, tenant_id, customer_key)
    existing = await _row(session, tenant_id, system, external_id)
    if existing is not None and existing.terminated_at is None:
        if existing.customer_id != customer.id or existing.plan_key != plan_key:
            raise Conflict(f"subscription '{external_id}' already exists for another customer or plan")
        return await _view(session, existing), False
    if existing is not None and existing.customer_id != customer.id:
        raise Conflict(f"subscription '{external_id}' belonged to another customer; its usage stays theirs")
    await plans.latest_published(session, tenant_id, plan_key)  # 404 before anything is written
    await _claim_subject(session, tenant_id, customer.key, external_id, actor=actor, at=at)
    native = await subscriptions.create(
        session, tenant_id,
        SubscriptionCreate(customer=customer.key, plan=plan_key, starts_at=starts_at, billing_anchor=billing_anchor),
        actor=actor, at=at,
    )
    row = existing or ExternalSubscription(tenant_id=tenant_id, system=system, external_id=external_id)
    row.id, row.customer_id, row.subscription_id = new_id("sub"), customer.id, native.subscription.id
    row.plan_key, row.name, row.created_at, row.terminated_at = plan_key, name, at, None
    session.add(row)
    await flush_unique(session, Conflict(f"subscription '{external_id}' was started by a concurrent request; retry"))
    return await _view(session, row), True


async def _claim_subject(
    session: AsyncSession, tenant_id: str, customer_key: str, subject: str, *, actor: str, at: datetime
) -> None:
    view = await customers.get(session, tenant_id, customer_key)
    if subject not in view.subject_keys:
        await customers.update(
            session, tenant_id, customer_key, CustomerUpdate(subject_keys=[*view.subject_keys, subject]),
            actor=actor, at=at,
        )


async def terminate(
    session: AsyncSession, tenant_id: str, system: str, external_id: str, *, actor: str, at: datetime
) -> ExternalView:
    """Ends the native subscription now; the subject stays the customer's, so usage already
    sent for it keeps being theirs."""
    view = await get(session, tenant_id, system, external_id)
    if view.row.terminated_at is not None:
        raise Conflict(f"subscription '{external_id}' is already terminated")
    native = view.native
    if native is not None and subscriptions.status_at(native, at) != "canceled":
        await subscriptions.cancel(session, tenant_id, native.id, when="now", actor=actor, at=at)
    view.row.terminated_at = at
    await session.flush()
    return view


async def of_native(session: AsyncSession, tenant_id: str, subscription_id: str) -> ExternalView | None:
    """The live external subscription that started this native one, if any."""
    row = await session.scalar(select(ExternalSubscription).where(
        ExternalSubscription.tenant_id == tenant_id, ExternalSubscription.subscription_id == subscription_id,
        ExternalSubscription.terminated_at.is_(None),
    ))
    return None if row is None else await _view(session, row)


async def list_(
    session: AsyncSession, tenant_id: str, system: str, *, customer_key: str | None, offset: int, limit: int
) -> tuple[list[ExternalView], int]:
    """A page in creation order, and how many there are in all."""
    where = [ExternalSubscription.tenant_id == tenant_id, ExternalSubscription.system == system]
    if customer_key is not None:
        customer = await customers.find(session, tenant_id, customer_key)
        where.append(ExternalSubscription.customer_id == customer.id)
    rows = await session.scalars(
        select(ExternalSubscription).where(*where).order_by(ExternalSubscription.id).offset(offset).limit(limit)
    )
    total = await session.scalar(select(func.count()).select_from(ExternalSubscription).where(*where))
    return [await _view(session, r) for r in rows], int(total or 0)

