"""What still refers to a meter or a customer, which must not be deleted from under it.

A meter feeding a live feature would leave that feature's entitlements counting nothing
while checks keep answering from their counters; a customer with a live subscription would
leave the subscription unreachable. Both deletes are refused (409) naming what refers to
the thing, as OpenMeter refuses deleting a customer with active subscriptions: archive the
features, or cancel the subscriptions, first.

Likewise a meter's group-by may change, but not a group that a live feature filters on: its
entitlements' live counters were counted by that group's values, and would no longer agree
with what the meter shows for them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements.models import Feature, Subscription
from allotment.entitlements.subscriptions import status_at
from allotment.errors import Conflict, FieldError


async def refuse_meter_in_use(session: AsyncSession, tenant_id: str, meter_id: str, meter_key: str) -> None:
    keys = list(await session.scalars(
        select(Feature.key).where(Feature.tenant_id == tenant_id, Feature.meter_id == meter_id,
                                  Feature.archived_at.is_(None)).order_by(Feature.key)
    ))
    if keys:
        raise _in_use("meter_in_use", f"meter '{meter_key}' feeds feature(s) {_listed(keys)}:"
                                      " archive them or link them to another meter first")


async def refuse_group_change(
    session: AsyncSession, tenant_id: str, meter_id: str, meter_key: str, before: dict[str, str],
    after: dict[str, str],
) -> None:
    """Refuses a group-by `after` that drops or changes a group a live feature filters on."""
    rows = await session.execute(
        select(Feature.key, Feature.meter_group_filter).where(
            Feature.tenant_id == tenant_id, Feature.meter_id == meter_id, Feature.archived_at.is_(None)
        ).order_by(Feature.key)
    )
    errors = [
        FieldError(f"group_by.{name}", f"feature '{key}' filters on it, so it must stay '{before.get(name)}'")
        for key, group_filter in rows
        for name in sorted(group_filter or {})
        if before.get(name) != after.get(name)
    ]
    if errors:
        listed = "; ".join(f"{e.field}: {e.message}" for e in errors)
        err = _in_use("group_in_use", f"meter '{meter_key}' keeps the groups live features filter on"
                                      f" (archive the features first to change them): {listed}")
        err.errors = errors
        raise err


async def refuse_customer_in_use(
    session: AsyncSession, tenant_id: str, customer_id: str, customer_key: str, *, at: datetime
) -> None:
    subs = await session.scalars(
        select(Subscription).where(Subscription.tenant_id == tenant_id, Subscription.customer_id == customer_id)
    )
    live = sorted(s.id for s in subs if status_at(s, at) != "canceled")
    if live:
        raise _in_use("customer_in_use", f"customer '{customer_key}' has live subscription(s) {_listed(live)}:"
                                         " cancel them first")


def _listed(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _in_use(code: str, detail: str) -> Conflict:
    err = Conflict(detail)
    err.code = code
    return err
