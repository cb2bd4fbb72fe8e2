"""Usage resets by hand: a metered entitlement starts a new usage period now.

An entitlement row's values never change once written (docs/entitlement-counters.md: the
check path proves a remembered row by its end), so a reset ends the row at `at` and starts an
identical one there, as an override does, with two differences:

- the new row is marked as begun by a reset (`reset_overage`), so its counter starts empty
  even when it keeps the period grid (`checks.continues_counter`), and the replay of grants
  (standing.py) treats the instant as a period boundary of the row it ended: grants and
  unused included units roll over by their bounds, and the period's overage carries in only
  when the reset says so;
- the new row keeps the entitlement's identity (`origin_id`) and its creation time: to the
  vendor it is the same entitlement, reset (listed where it was, updated at the reset).

Usage reported late for an instant before the reset counts in the period it ended, on the
ended row, as late usage does at any boundary; open holds stay on the period they were taken
in, as they do at a boundary too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.db import flush_unique
from allotment.entitlements import audit, features, notices, queries, standing
from allotment.entitlements.check import (
    counter_key,
    live_entitlement,
    metered_entitlement,
    standing_now,
    units,
)
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement
from allotment.entitlements.overrides import EntitlementView
from allotment.entitlements.provisioning import RACED
from allotment.entitlements.values import of_row
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import new_id

CARRY, FORGIVE = standing.CARRY, "forgive"


async def reset_usage(
    session: AsyncSession,
    row: CustomerEntitlement,
    *,
    retain_anchor: bool = False,
    preserve_overage: bool | None = None,
    actor: str,
    at: datetime,
    field: str = "feature",
) -> CustomerEntitlement:
    """End metered ad-hoc `row` at `at` and start the same entitlement there with a new usage
    period: anchored at `at`, or on the row's own grid with `retain_anchor` (the period then
    ends at the next regular boundary). The ended period's overage carries in when
    `preserve_overage` says so (None: the row's own policy). Returns the new row."""
    _require_resettable(row, at, field=field)
    preserve = row.overage_at_reset == CARRY if preserve_overage is None else preserve_overage
    # A carry into the period being ended is fixed first, as a check would: it is part of
    # that period's usage, and so of what its overage is.
    ended = await standing_now(session, row, at)
    before = audit.snapshot(row)
    row.active_to, row.updated_at = at, at
    await session.flush()
    reset = CustomerEntitlement(
        id=new_id("ent"), tenant_id=row.tenant_id, customer_id=row.customer_id, feature_id=row.feature_id,
        source=row.source, subscription_id=None, usage_anchor=row.usage_anchor if retain_anchor else at,
        time_zone=row.time_zone, active_from=at, active_to=None, created_at=row.created_at, updated_at=at,
        reset_overage=CARRY if preserve else FORGIVE, origin_id=row.public_id, metadata_=row.metadata_,
        **of_row(row),
    )
    session.add(reset)
    await flush_unique(session, Conflict(RACED))
    await audit.record(
        session, row.tenant_id, actor=actor, action="entitlement.ended", entity_type="customer_entitlement",
        entity_id=row.id, before=before, after=audit.snapshot(row), at=at,
    )
    await audit.record(
        session, row.tenant_id, actor=actor, action="entitlement.usage_reset", entity_type="customer_entitlement",
        entity_id=reset.id, before=before, after=audit.snapshot(reset), at=at,
    )
    await notices.entitlement_changed(
        session, row.tenant_id, row.customer_id, row.feature_id, changes=["usage_reset"], at=at
    )
    await _tell(session, row, reset, ended.period_start, at=at)
    return reset


async def _tell(
    session: AsyncSession, ended: CustomerEntitlement, reset: CustomerEntitlement, ended_start: datetime,
    *, at: datetime,
) -> None:
    """`entitlement.period_reset` for the period the reset starts, told at once (the boundary
    scan only tells the ends of a row's own periods)."""
    used, _, _ = await queries.counter_state(session, *counter_key(ended, ended_start)) or (0, 0, None)
    found = await standing.standing(session, reset, at)
    opening = units(found.carry or 0)  # overage the reset carried in
    numbers = notices.standing_of(metered_entitlement(reset), opening, units(0), found.grants, at)
    where = notices.Where(reset.tenant_id, reset.id, reset.customer_id, reset.feature_id,
                          found.period_start, found.period_end)
    await notices.tell_reset(session, where, numbers, previous_start=ended_start, previous_usage=units(used), at=at)


async def reset_feature(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    feature_key: str,
    *,
    retain_anchor: bool = False,
    preserve_overage: bool | None = None,
    actor: str,
    at: datetime,
) -> EntitlementView:
    """`reset_usage` of the customer's entitlement to the feature in force now."""
    customer = await customers.find(session, tenant_id, customer_key)
    feature = await features.held_by(session, tenant_id, feature_key, customer_id=customer.id, at=at)
    row = await live_entitlement(session, tenant_id, customer.id, feature.id, at)
    if row is None:
        raise NotFound("entitlement", f"{customer_key}/{feature_key}")
    reset = await reset_usage(
        session, row, retain_anchor=retain_anchor, preserve_overage=preserve_overage, actor=actor, at=at
    )
    return EntitlementView(reset, customer.key, feature.key)


def _require_resettable(row: CustomerEntitlement, at: datetime, *, field: str) -> None:
    """Only a live metered entitlement made through the API is reset: another kind has no
    usage period (400), one from a subscription follows the subscription's periods (409)."""
    if row.active_from > at or (row.active_to is not None and row.active_to <= at):
        raise NotFound("entitlement", row.public_id)
    if row.kind != Kind.METERED:
        raise ValidationFailed.on(field, f"only a metered entitlement can be reset; this one is {row.kind}")
    if row.source != "adhoc":
        raise Conflict(
            "the entitlement comes from the customer's subscription: its usage resets with the "
            "subscription's periods (change the subscription to move them)"
        )
