"""How OpenMeter paths name a customer's entitlement: by its id, or by its feature's key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.entitlements import features, provisioning
from allotment.entitlements.check import live_entitlement
from allotment.entitlements.models import CustomerEntitlement
from allotment.errors import NotFound


async def resolve(
    session: AsyncSession, tenant_id: str, customer_ref: str, ref: str, at: datetime
) -> tuple[Customer, CustomerEntitlement, str]:
    """The customer's entitlement with id `ref` (even ended), else its live one to feature `ref`.

    An entitlement reset by hand is one entitlement over several rows (usage_resets.py): its
    id names the latest of them, the one a reset has not ended."""
    customer = await customers.find(session, tenant_id, customer_ref)
    rows = await provisioning.rows_of(session, tenant_id, customer.id)
    row = next((r for r in rows if r.id == ref), None)
    if row is not None:
        row = [r for r in rows if r.public_id == row.public_id][-1]  # rows are in order of start
        keys = await features.keys_of(session, tenant_id, [row.feature_id])
        return customer, row, keys[row.feature_id]
    feature = await features.held_by(session, tenant_id, ref, customer_id=customer.id, at=at)
    row = await live_entitlement(session, tenant_id, customer.id, feature.id, at)
    if row is None:
        raise NotFound("entitlement", ref)
    return customer, row, feature.key


async def resolve_live(
    session: AsyncSession, tenant_id: str, customer_ref: str, ref: str, at: datetime
) -> tuple[Customer, CustomerEntitlement, str]:
    """As `resolve`, for what is asked of the entitlement at `at` (its value, a grant on it):
    one ended by then, deleted or replaced by an override, is not found there, as in OpenMeter
    (its id still reads it, and its value at an instant it was live)."""
    customer, row, key = await resolve(session, tenant_id, customer_ref, ref, at)
    if row.active_to is not None and row.active_to <= at:
        raise NotFound("entitlement", ref)
    return customer, row, key
