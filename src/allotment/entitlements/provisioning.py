"""Provisioning: a customer's entitlements follow its subscriptions.

`reprovision` is the one way plan-sourced rows change. It computes, from `at` on, the rows
the customer's subscriptions call for (the current one until it ends, then a scheduled one),
leaves rows that already say exactly that, moves their end when only the end changed, ends
the rest at `at` (or drops them if they had not started) and adds what is missing. Features
held by an override or an ad-hoc entitlement are left to those: they win over any plan.

Invariant: for each customer and feature, rows never overlap and at most one is open-ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import flush_unique
from allotment.entitlements import audit, metered_usage, notices, plans, queries, reservations
from allotment.entitlements.check import continues_counter, standing_now, usage_period
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement, Subscription
from allotment.entitlements.periods import period_at
from allotment.entitlements.values import of_row
from allotment.errors import Conflict
from allotment.metering.queries import lock_tenant_exclusive
from allotment.types import as_utc, new_id, to_micros

MANUAL = ("override", "adhoc")
RACED = "the customer's entitlements were changed concurrently; retry"


@dataclass
class Wanted:
    subscription_id: str
    feature_id: str
    values: dict[str, Any]
    usage_anchor: datetime
    time_zone: str
    active_from: datetime
    active_to: datetime | None
    # Where the row may reach back to: the start of a subscription created in this transaction
    # (backdated); a later reprovision of an older one (a migration, an override removed) does
    # not hand a feature periods in which the customer did not have it.
    starts_at: datetime

    def matches(self, row: CustomerEntitlement) -> bool:
        """Same source, feature and values: only the end may differ."""
        return (
            row.subscription_id == self.subscription_id
            and row.feature_id == self.feature_id
            and of_row(row) == self.values
            and row.usage_anchor == self.usage_anchor
            and row.time_zone == self.time_zone
        )


async def reprovision(
    session: AsyncSession, tenant_id: str, customer_id: str, *, actor: str, at: datetime
) -> None:
    """Make the customer's plan rows follow its subscriptions from `at` on.

    Every feature whose rows changed in this transaction (here, or by an override closing
    rows before calling this) gets one `entitlement.changed` naming what holds now.
    """
    manual_rows = [r for r in await open_rows(session, tenant_id, customer_id, at) if r.source in MANUAL]
    for r in manual_rows:
        if r.created_at == at:  # made in this transaction (a backdated one starts earlier)
            _changed(session, r, r.source)
    planned = await _wanted(session, tenant_id, customer_id, at)
    for r in [r for r in manual_rows if r.source == "override"]:
        if not await _follow_plan(session, r, planned, actor=actor, at=at):
            manual_rows.remove(r)
    manual = {r.feature_id for r in manual_rows}
    wanted = [w for w in planned if w.feature_id not in manual]
    existing = [r for r in await open_rows(session, tenant_id, customer_id, at) if r.source == "plan"]
    for row in existing:
        match = next((w for w in wanted if w.matches(row)), None)
        if match is None:
            await close(session, row, actor=actor, at=at)
            continue
        wanted.remove(match)
        if row.active_to != match.active_to:
            before = audit.snapshot(row)
            row.active_to, row.updated_at = match.active_to, at
            _changed(session, row, "rescheduled")
            await _audit(session, "entitlement.rescheduled", row, before, actor=actor, at=at)
    await session.flush()  # ended rows first: the new ones may take over their open slot
    for item in wanted:
        item.active_from = await _backdated(session, tenant_id, customer_id, item, at)
    if any(w.active_from < at and w.values["kind"] == Kind.METERED for w in wanted):
        # before the rows exist: no ingest may count an event that they count too
        await lock_tenant_exclusive(session, tenant_id)
    added = [await _add(session, tenant_id, customer_id, item, actor=actor, at=at) for item in wanted]
    await flush_unique(session, Conflict(RACED))
    for row in added:
        await count_past_events(session, row, at=at)
    await _carry_usage(session, tenant_id, customer_id, at)
    pending: dict[tuple[str, str], list[str]] = session.info.get(_PENDING, {})
    for (customer, feature_id), changes in list(pending.items()):
        if customer == customer_id:
            del pending[(customer, feature_id)]
            await notices.entitlement_changed(session, tenant_id, customer_id, feature_id, changes=changes, at=at)


_PENDING = "entitlement_changes"


async def _follow_plan(
    session: AsyncSession, row: CustomerEntitlement, planned: list[Wanted], *, actor: str, at: datetime
) -> bool:
    """An override replaces the values of a plan that gives its feature, so it lasts as long as
    the customer's subscriptions give the feature from `at` on: it ends with a cancel, or with a
    change to a plan without the feature (now or when it takes effect). False when it ended now."""
    giving = [w for w in planned if w.feature_id == row.feature_id]
    if not any(w.active_from <= at for w in giving):
        await close(session, row, actor=actor, at=at)
        return False
    end = None if any(w.active_to is None for w in giving) else max(w.active_to for w in giving if w.active_to)
    if row.active_to != end:
        before = audit.snapshot(row)
        row.active_to, row.updated_at = end, at
        _changed(session, row, "rescheduled")
        await _audit(session, "entitlement.rescheduled", row, before, actor=actor, at=at)
    return True


async def _carry_usage(session: AsyncSession, tenant_id: str, customer_id: str, at: datetime) -> None:
    """A metered row that takes over from one ended at the same instant (an override, a plan
    change now) starts with the usage its predecessor had in the period containing `at`,
    and takes its open holds, when both periods start together: changing a limit mid-period
    must not hand back what was already used or held. With another period grid the new row
    counts from its own period."""
    rows = list(await session.scalars(select(CustomerEntitlement).where(
        CustomerEntitlement.tenant_id == tenant_id, CustomerEntitlement.customer_id == customer_id,
        CustomerEntitlement.kind == Kind.METERED,
        or_(CustomerEntitlement.active_from == at, CustomerEntitlement.active_to == at),
    )))
    started = {r.feature_id: r for r in rows if r.active_from == at}
    locked = False
    for old in rows:
        new = started.get(old.feature_id)
        if new is not None and continues_counter(old, new):
            if not locked:
                # An ingest that counted on the old row but has not committed yet would be
                # missing from the copy: wait for ingests in flight; later ones find the new row.
                await lock_tenant_exclusive(session, tenant_id)
                locked = True
            start, _ = period_at(usage_period(old), at)
            # Overage carried into the period counts before the counter is copied, even if
            # nothing had looked at the period yet (fixing it is what a check does first).
            await standing_now(session, old, at - timedelta(microseconds=1))
            await queries.carry_counter(session, tenant_id, old.id, new.id, to_micros(start))
            await reservations.hand_over(session, tenant_id, old.id, new.id, to_micros(start))


def _changed(session: AsyncSession, row: CustomerEntitlement, change: str) -> None:
    """Note a change of the row's feature, told of at the end of `reprovision`."""
    pending: dict[tuple[str, str], list[str]] = session.info.setdefault(_PENDING, {})
    pending.setdefault((row.customer_id, row.feature_id), []).append(change)


async def open_rows(
    session: AsyncSession,
    tenant_id: str,
    customer_id: str,
    at: datetime,
    *,
    feature_id: str | None = None,
) -> list[CustomerEntitlement]:
    """Rows live at `at` or starting later (everything a change at `at` can still affect)."""
    stmt = select(CustomerEntitlement).where(
        CustomerEntitlement.tenant_id == tenant_id,
        CustomerEntitlement.customer_id == customer_id,
        or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > at),
    )
    if feature_id is not None:
        stmt = stmt.where(CustomerEntitlement.feature_id == feature_id)
    return list(await session.scalars(stmt.order_by(CustomerEntitlement.active_from)))


async def close(
    session: AsyncSession, row: CustomerEntitlement, *, actor: str, at: datetime
) -> None:
    """End a row at `at`; one that had not started yet never took effect and is dropped."""
    before = audit.snapshot(row)
    _changed(session, row, "ended")
    if row.active_from < at:
        row.active_to, row.updated_at = at, at
        await _audit(session, "entitlement.ended", row, before, actor=actor, at=at)
        return
    await session.delete(row)
    await audit.record(
        session, row.tenant_id, actor=actor, action="entitlement.ended",
        entity_type="customer_entitlement", entity_id=row.id, before=before, after=None, at=at,
    )


async def current_subscriptions(
    session: AsyncSession, tenant_id: str, customer_id: str, at: datetime
) -> list[Subscription]:
    """Subscriptions in force at `at` or scheduled after it, in order."""
    rows = await session.scalars(
        select(Subscription)
        .where(
            Subscription.tenant_id == tenant_id,
            Subscription.customer_id == customer_id,
            Subscription.status != "canceled",
            or_(Subscription.ends_at.is_(None), Subscription.ends_at > at),
        )
        .order_by(Subscription.starts_at)
    )
    return list(rows)


async def _wanted(
    session: AsyncSession, tenant_id: str, customer_id: str, at: datetime
) -> list[Wanted]:
    out: list[Wanted] = []
    for sub in await current_subscriptions(session, tenant_id, customer_id, at):
        plan = await plans.by_id(session, tenant_id, sub.plan_id)
        for ent in await plans.entitlements_of(session, plan):
            out.append(
                Wanted(
                    subscription_id=sub.id, feature_id=ent.feature_id, values=of_row(ent),
                    usage_anchor=sub.billing_anchor, time_zone=sub.time_zone,
                    active_from=max(sub.starts_at, at), active_to=sub.ends_at,
                    starts_at=sub.starts_at if sub.created_at == at else max(sub.starts_at, at),
                )
            )
    return out


async def planned_values(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, at: datetime
) -> dict[str, Any] | None:
    """The values the customer's subscription in force at `at` gives the feature, if any."""
    for item in await _wanted(session, tenant_id, customer_id, at):
        if item.feature_id == feature_id and item.active_from <= at:
            return item.values
    return None


async def _backdated(
    session: AsyncSession, tenant_id: str, customer_id: str, item: Wanted, at: datetime
) -> datetime:
    """Where a new row starts: at `at`, or, for a subscription that started before `at`, back
    to its start (`backdated_start`)."""
    if item.starts_at >= item.active_from:
        return item.active_from
    return await backdated_start(session, tenant_id, customer_id, item.feature_id, item.starts_at, at=at)


async def backdated_start(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, wanted: datetime, *, at: datetime
) -> datetime:
    """Where a row of the feature asked to start at `wanted` (before `at`) starts: there, but
    never over the span of an earlier row of the feature (rows never overlap). A row that
    starts in the past owns the usage since then (`count_past_events`)."""
    ended = await session.scalar(select(func.max(CustomerEntitlement.active_to)).where(
        CustomerEntitlement.tenant_id == tenant_id, CustomerEntitlement.customer_id == customer_id,
        CustomerEntitlement.feature_id == feature_id, CustomerEntitlement.active_from < at,
    ))
    return min(at, max(wanted, as_utc(ended) if ended is not None else wanted))


async def count_past_events(session: AsyncSession, row: CustomerEntitlement, *, at: datetime) -> None:
    """Fill a new metered row that starts before `at` with the usage since its start, under
    the tenant's ingest lock held exclusively (docs/entitlement-counters.md)."""
    if row.active_from < at and row.kind == Kind.METERED:
        await lock_tenant_exclusive(session, row.tenant_id)
        await metered_usage.count_past_events(session, row)


async def _add(
    session: AsyncSession, tenant_id: str, customer_id: str, item: Wanted, *, actor: str, at: datetime
) -> CustomerEntitlement:
    row = CustomerEntitlement(
        id=new_id("ent"), tenant_id=tenant_id, customer_id=customer_id,
        feature_id=item.feature_id, source="plan", subscription_id=item.subscription_id,
        usage_anchor=item.usage_anchor, time_zone=item.time_zone,
        active_from=item.active_from, active_to=item.active_to,
        created_at=at, updated_at=at, **item.values,
    )
    session.add(row)
    _changed(session, row, "provisioned")
    await _audit(session, "entitlement.provisioned", row, None, actor=actor, at=at)
    return row


async def _audit(
    session: AsyncSession,
    action: str,
    row: CustomerEntitlement,
    before: dict[str, Any] | None,
    *,
    actor: str,
    at: datetime,
) -> None:
    await audit.record(
        session, row.tenant_id, actor=actor, action=action, entity_type="customer_entitlement",
        entity_id=row.id, before=before, after=audit.snapshot(row), at=at,
    )


async def rows_of(
    session: AsyncSession, tenant_id: str, customer_id: str
) -> list[CustomerEntitlement]:
    """Every row of a customer, past, present and scheduled, in order."""
    rows = await session.scalars(
        select(CustomerEntitlement)
        .where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.customer_id == customer_id,
        )
        .order_by(CustomerEntitlement.active_from, CustomerEntitlement.id)
    )
    return list(rows)
