"""Period resets told at the boundary: the delivery worker's periodic scan.

`entitlement.period_reset` is told once for each end of a usage period that had usage. Either
the first usage of the next period tells it (notices.usage_moved, before that usage's own
crossings, so the order per customer holds; a move from the overage carried in counts as the
first usage too), or, when nobody uses the next period first, this
scan does, shortly after the boundary. Both use the same dedupe key and `tell`, so the notice
says the same however it is told: the new period's opening state (usage 0 or the overage carried
in, the limits raised by the grants live at its start). The scan leaves out a reset into a
period that has ended as well: nobody is told of a month that is already history.

The scan costs what is new, not what exists: it works out the end of each new counter's
period once (from its entitlement's usage period, in its time zone) and stores it, in short
transactions of their own (those counters are live); then it takes the counters whose
period has ended and whose reset is not told yet, by an index on (reset_told, period_end).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import check as checks
from allotment.entitlements import notices, queries, standing
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement, EntitlementUsage
from allotment.entitlements.periods import period_at
from allotment.types import from_micros, to_micros

NEVER = queries.MAX_BIGINT  # the end of a period that never ends (and of a seats gauge)


def period_end(row: CustomerEntitlement, period_start_us: int) -> int:
    """When the period of `row` starting at `period_start_us` ends, in epoch µs (or NEVER)."""
    if period_start_us == queries.SEAT_PERIOD or row.kind != Kind.METERED:
        return NEVER
    _, end = period_at(checks.usage_period(row), from_micros(period_start_us))
    return NEVER if end is None else to_micros(end)


NOTE_BATCH = 200  # new counters given their period's end per transaction


async def note_period_ends(session: AsyncSession, *, limit: int = NOTE_BATCH) -> int:
    """Store the end of the period of up to `limit` new counters (any tenant); returns how many.

    These are counters of periods in progress, which consumes lock and update all the time:
    the caller commits each batch at once, so no consume waits behind the telling that
    follows, and on PostgreSQL a counter locked by a consume is left for the next scan.
    """
    u, e = EntitlementUsage, CustomerEntitlement
    fresh = (await session.execute(
        select(u.tenant_id, u.entitlement_id, u.period_start, e)
        .join(e, and_(e.tenant_id == u.tenant_id, e.id == u.entitlement_id))
        .where(u.period_end.is_(None)).limit(limit).with_for_update(of=u, skip_locked=True)
    )).all()
    if fresh:
        await session.execute(update(u), [
            {"tenant_id": r.tenant_id, "entitlement_id": r.entitlement_id, "period_start": r.period_start,
             "period_end": period_end(r.CustomerEntitlement, int(r.period_start))}
            for r in fresh
        ])
    return len(fresh)


async def tell_due(session: AsyncSession, *, at: datetime, limit: int = 1000) -> int:
    """Tell the resets of periods ended by `at` (any tenant) whose end is noted; returns how many."""
    u, e = EntitlementUsage, CustomerEntitlement
    joined = and_(e.tenant_id == u.tenant_id, e.id == u.entitlement_id)
    due = (await session.execute(
        select(u.tenant_id, u.entitlement_id, u.period_start, u.period_end, u.used, e).join(e, joined)
        .where(u.reset_told.is_(False), u.period_end <= to_micros(at))
        .order_by(u.period_end).limit(limit)
    )).all()
    told, now_us = 0, to_micros(at)
    for r in due:
        row: CustomerEntitlement = r.CustomerEntitlement
        ended_first = row.active_to is not None and to_micros(row.active_to) <= r.period_end
        # A reset into a period that is over too is stale (its usage was first seen after that
        # period: a backdated subscription, a late event, a worker that was down): told now, it
        # would arrive after the resets and crossings of the periods since.
        stale = period_end(row, int(r.period_end)) <= now_us
        if r.used > 0 and not ended_first and not stale:  # a replaced or ended row has no next period
            told += await tell(session, row, int(r.period_start), int(r.period_end), int(r.used), at)
    if due:
        await session.execute(update(u), [
            {"tenant_id": r.tenant_id, "entitlement_id": r.entitlement_id, "period_start": r.period_start,
             "reset_told": True}
            for r in due
        ])
    return told


async def tell(
    session: AsyncSession, row: CustomerEntitlement, previous_us: int, start_us: int, used: int, at: datetime
) -> bool:
    """The reset from the period of `row` starting at `previous_us` (`used` millionths in it) into
    the one starting at `start_us`, with that period's opening numbers; False if told before.

    Opening, not current: the first usage of the period may be what tells it, and its own
    numbers are the crossings' to tell."""
    start = from_micros(start_us)
    found = await standing.standing(session, row, start)
    carried = found.carry  # overage carried in, when the policy carries it
    if carried is None and standing.carries_into(row, start):  # already fixed: it is in the counter
        counter = await queries.counter_state(session, *checks.counter_key(row, start))
        carried = None if counter is None else counter[2]
    opening = checks.units(carried or 0)
    numbers = notices.standing_of(checks.metered_entitlement(row), opening, checks.units(0), found.grants, start)
    where = notices.Where(row.tenant_id, row.id, row.customer_id, row.feature_id, start, found.period_end)
    return await notices.tell_reset(session, where, numbers, previous_start=from_micros(previous_us),
                                    previous_usage=checks.units(used), at=at)
