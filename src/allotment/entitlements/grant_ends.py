"""Keeping the usage of a period at the instants grants start or end in it (effective time,
expiry, void, start-over).

What a grant that starts or ends mid-period pays for follows from the period's usage at that instant,
which a per-period counter does not keep by itself (docs/grants.md). So every write to a
counter first keeps, for each such instant of its period that has passed with nothing kept
yet, the counter's value: nothing moved it since the instant, so it still holds that usage.
Concurrent first writers agree (a conditional update, an insert that ignores conflicts).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from allotment.entitlements import check as checks
from allotment.entitlements import queries, recurring
from allotment.entitlements.models import CustomerEntitlement, EntitlementUsage, GrantRecord
from allotment.entitlements.periods import period_at
from allotment.entitlements.standing import grant_of, recurrence_of, segment_start
from allotment.types import from_micros, to_micros

_TICK = timedelta(microseconds=1)


async def record(session: AsyncSession, row: CustomerEntitlement, period_start: datetime,
                 at: datetime, *, recurs: bool) -> None:
    """Before the counter of `row`'s period moves: keep its usage in each grant that ended in
    the period (expiry or void, up to `at`) and has none kept yet, and in each that became
    effective in the row's part of it; with `recurs` (some grant of the customer's feature
    recurs), at each start-over in it too.

    Every write to a counter calls this first (when a grant of the period has started or
    ended), so a grant with nothing kept has seen no write since that instant: the counter
    still holds its usage then. Only instants inside the period count: usage reported late
    into an old period says nothing of a grant that started or ended in a later one.

    The counter is locked first, as every other writer of it does before the grants: a
    commit keeping usage here and a check that had just given an expired hold back on the
    same counter took the two in opposite orders and deadlocked.
    """
    await queries.lock_counters(session, [checks.counter_key(row, period_start)])
    period_end = period_at(checks.usage_period(row), period_start)[1]
    if period_end is not None:
        at = min(at, period_end - _TICK)
    await _record_starts(session, row, period_start, at)
    expires, voided = GrantRecord.expires_at, GrantRecord.voided_at
    ended_in_period = or_(
        and_(expires > period_start, expires <= at, or_(voided.is_(None), voided >= expires)),
        and_(voided > period_start, voided <= at, or_(expires.is_(None), expires > voided)),
    )
    await session.execute(
        update(GrantRecord)
        .where(GrantRecord.tenant_id == row.tenant_id, GrantRecord.customer_id == row.customer_id,
               GrantRecord.feature_id == row.feature_id, GrantRecord.usage_at_end.is_(None),
               ended_in_period)
        .values(usage_at_end=func.coalesce(_used(row, period_start), 0))
        .execution_options(synchronize_session=False)
    )
    if recurs:
        await _record_recurrences(session, row, period_start, at)


async def count_late(session: AsyncSession, row: CustomerEntitlement, period_start: datetime,
                     usage: list[tuple[int, int]]) -> None:
    """Usage reported (by events) after a grant started or ended in the period, for an instant
    before that, was part of the period's usage at that instant: add it to what the grant keeps.

    `usage` is the batch's (event time µs, millionths) for this counter; `record` has run, so
    what is kept is the counter before the batch. A network's records of data used while an
    add-on was live, arriving after it expired, are then paid by the add-on (up to its amount),
    not by the bundle; those from before an add-on was bought are not the add-on's to pay.
    Recurring grants' start-overs are not adjusted (their usage is kept as written).
    """
    earliest = from_micros(min(t for t, _ in usage))
    period_end = period_at(checks.usage_period(row), period_start)[1]
    expires, voided = GrantRecord.expires_at, GrantRecord.voided_at
    found = (await session.execute(
        select(GrantRecord.id, GrantRecord.effective_at, GrantRecord.usage_at_start, expires, voided,
               GrantRecord.usage_at_end)
        .where(GrantRecord.tenant_id == row.tenant_id, GrantRecord.customer_id == row.customer_id,
               GrantRecord.feature_id == row.feature_id,
               or_(and_(GrantRecord.usage_at_start.is_not(None), GrantRecord.effective_at > earliest),
                   and_(GrantRecord.usage_at_end.is_not(None), or_(expires > earliest, voided > earliest))))
    )).all()
    begins: datetime | None = None
    for grant_id, effective, at_start, expiry, void, at_end in found:
        changes: dict[str, Any] = {}
        if at_start is not None and _inside(effective, period_start, period_end):
            begins = begins or await segment_start(session, row, period_start)
            before = _before(usage, effective)
            if effective > begins and before:
                changes["usage_at_start"] = GrantRecord.usage_at_start + before
        end = min((t for t in (expiry, void) if t is not None), default=None)
        if at_end is not None and end is not None and _inside(end, period_start, period_end) \
                and (before := _before(usage, end)):
            changes["usage_at_end"] = GrantRecord.usage_at_end + before
        if changes:
            await session.execute(update(GrantRecord).where(GrantRecord.id == grant_id).values(**changes)
                                  .execution_options(synchronize_session=False))


def _inside(instant: datetime, period_start: datetime, period_end: datetime | None) -> bool:
    return period_start < instant and (period_end is None or instant < period_end)


def _before(usage: list[tuple[int, int]], instant: datetime) -> int:
    cut = to_micros(instant)
    return sum(micros for time_us, micros in usage if time_us < cut)


async def _record_starts(session: AsyncSession, row: CustomerEntitlement, period_start: datetime,
                         at: datetime) -> None:
    """Keep the counter's usage in each grant that became effective in the row's part of the
    period up to `at` (one effective before that part began was live all through it)."""
    begins = await segment_start(session, row, period_start)
    await session.execute(
        update(GrantRecord)
        .where(GrantRecord.tenant_id == row.tenant_id, GrantRecord.customer_id == row.customer_id,
               GrantRecord.feature_id == row.feature_id, GrantRecord.usage_at_start.is_(None),
               GrantRecord.effective_at > begins, GrantRecord.effective_at <= at)
        .values(usage_at_start=func.coalesce(_used(row, period_start), 0))
        .execution_options(synchronize_session=False)
    )


def _used(row: CustomerEntitlement, period_start: datetime) -> ScalarSelect[int]:
    """The counter of `row`'s period, as a subquery of the update that keeps it."""
    return select(EntitlementUsage.used).where(
        EntitlementUsage.tenant_id == row.tenant_id, EntitlementUsage.entitlement_id == row.id,
        EntitlementUsage.period_start == to_micros(period_start),
    ).scalar_subquery()


async def _record_recurrences(session: AsyncSession, row: CustomerEntitlement, period_start: datetime,
                              at: datetime) -> None:
    """The same for recurring grants: keep the counter's usage at each start-over in the
    period up to `at` that has none kept yet (the instance that ended there paid for it)."""
    found = await session.scalars(
        select(GrantRecord).where(
            GrantRecord.tenant_id == row.tenant_id, GrantRecord.customer_id == row.customer_id,
            GrantRecord.feature_id == row.feature_id, GrantRecord.recurrence_interval.is_not(None),
            GrantRecord.effective_at < at,
        )
    )
    records = [(r, every) for r in found if (every := recurrence_of(r)) is not None]
    if not records:
        return
    kept = await queries.latest_recurrences(
        session, row.tenant_id, [r.id for r, _ in records], after=to_micros(period_start))
    starts = [(r.id, to_micros(t)) for r, every in records
              for t in recurring.starts_within(grant_of(r), every, until=at,
                                               after=from_micros(kept.get(r.id, to_micros(period_start))))]
    if starts:
        await queries.keep_usage_at_recurrences(
            session, row.tenant_id, row.id, to_micros(period_start), starts)
