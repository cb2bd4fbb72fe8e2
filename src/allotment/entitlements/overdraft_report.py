"""The overdraft report: which customers ran above what they paid for, how far, for how long.

For sales at renewal (the evidence for an upsell) and for customers' own review. Over a window
[start, end), per customer and feature:
- seats: the gauge rebuilt from the leases (`seat_leases` and the earlier spans in
  `seat_spans`) against the soft limit of the terms in force at each instant
  (`overdraft.seat_overdraft`): time and seat-hours above it, the peak, each episode;
- metered: each usage period overlapping the window whose usage passed its soft limit (raised
  by the grants live then: a top-up bought later does not hide it), at its largest overage
  (`overdraft.metered_peak`).
Both carry the denials recorded in the window. Pairs that never ran above and were never
refused in the window are left out.

Read-only; pairs are scanned in (customer id, feature id) order, so a cursor resumes the scan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.entitlements import features, queries, standing
from allotment.entitlements.check import units, usage_period
from allotment.entitlements.engine import ZERO, Grant, Kind, pays_as_it_goes
from allotment.entitlements.models import (
    CustomerEntitlement,
    GrantRecord,
    SeatLease,
    SeatSpan,
    UsageDenial,
)
from allotment.entitlements.overdraft import (
    Lease,
    SeatOverdraft,
    Terms,
    metered_peak,
    seat_overdraft,
)
from allotment.entitlements.periods import period_at
from allotment.errors import ValidationFailed
from allotment.types import as_utc, from_micros, to_micros

_SCAN = 200  # pairs read per query while looking for a page of overdrafts
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class PeriodOverage:
    period_start: datetime
    period_end: datetime | None
    usage: Decimal
    soft_limit: Decimal
    overage: Decimal


@dataclass(frozen=True)
class Overdraft:
    """One customer's overdraft on one feature in the window; limits are the latest terms'."""

    customer: str
    feature: str
    kind: Kind
    included: Decimal
    soft_limit: Decimal
    hard_limit: Decimal | None
    denials: int
    seats: SeatOverdraft | None = None
    periods: tuple[PeriodOverage, ...] = ()


async def report(
    session: AsyncSession,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    at: datetime,
    customer: str | None = None,
    feature: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> tuple[list[Overdraft], str | None]:
    """Up to `limit` overdrafts in [start, end), and the cursor after the last (None: no more).

    `end` later than `at` is cut to `at`: what has not happened yet is not reported.
    """
    start, end = as_utc(start), min(as_utc(end), as_utc(at))
    if not start < end:
        raise ValidationFailed.on("from", "must be before `to` and before now")
    filters: list[ColumnElement[bool]] = [
               CustomerEntitlement.tenant_id == tenant_id,
               CustomerEntitlement.kind.in_([Kind.SEATS.value, Kind.METERED.value]),
               CustomerEntitlement.active_from < end,
               or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > start)]
    if customer is not None:
        filters.append(CustomerEntitlement.customer_id == (await customers.find(session, tenant_id, customer)).id)
    if feature is not None:
        filters.append(CustomerEntitlement.feature_id == (await features.get(session, tenant_id, feature, archived=True)).id)
    found: list[Overdraft] = []
    position = after
    while True:
        pairs = await _pairs(session, filters, position, limit=_SCAN)
        denials = await _denials(session, tenant_id, {c for (c, _), _ in pairs}, start, end)
        for pair, rows in pairs:
            position = f"{pair[0]}:{pair[1]}"
            item = await _overdraft(session, rows, start, end, at, denials.get(pair, 0))
            if item is not None:
                found.append(item)
            if len(found) == limit:
                more = bool(await _pairs(session, filters, position, limit=1))
                return found, position if more else None
        if len(pairs) < _SCAN:
            return found, None


async def _overdraft(
    session: AsyncSession, rows: Sequence[CustomerEntitlement], start: datetime, end: datetime, at: datetime,
    denials: int,
) -> Overdraft | None:
    """The pair's overdraft under the kind of its latest terms; None when it never ran above
    and was never refused (a refusal at a cap with no overdraft allowed is evidence too)."""
    latest = rows[-1]
    rows = [r for r in rows if r.kind == latest.kind]
    seats: SeatOverdraft | None = None
    periods: tuple[PeriodOverage, ...] = ()
    if latest.kind == Kind.SEATS:
        seats = await _seats(session, rows, start, end, at)
        over = bool(seats.episodes)
    else:
        periods = await _periods(session, rows, start, end, at)
        over = bool(periods)
    if not over and not denials:
        return None
    customer = await session.get(Customer, latest.customer_id)
    feature_keys = await features.keys_of(session, latest.tenant_id, [latest.feature_id])
    return Overdraft(
        customer=latest.customer_id if customer is None else customer.key,
        feature=feature_keys.get(latest.feature_id, latest.feature_id), kind=Kind(latest.kind),
        included=latest.included or ZERO, soft_limit=standing.soft_limit(latest), hard_limit=latest.hard_limit,
        denials=denials, seats=seats, periods=periods,
    )


async def _seats(
    session: AsyncSession, rows: Sequence[CustomerEntitlement], start: datetime, end: datetime, at: datetime
) -> SeatOverdraft:
    tenant_id, ids = rows[0].tenant_id, [r.id for r in rows]
    current = await session.execute(
        select(SeatLease.activated_at, SeatLease.expires_at, SeatLease.released_at)
        .where(SeatLease.tenant_id == tenant_id, SeatLease.entitlement_id.in_(ids), SeatLease.activated_at < end)
    )
    earlier = await session.execute(
        select(SeatSpan.activated_at, SeatSpan.ended_at)
        .where(SeatSpan.tenant_id == tenant_id, SeatSpan.entitlement_id.in_(ids), SeatSpan.ended_at > start)
    )
    leases = [Lease(a, _lease_end(expires, released, at)) for a, expires, released in current]
    leases += [Lease(a, ended) for a, ended in earlier]
    terms = [Terms(r.active_from, r.active_to, standing.soft_limit(r)) for r in rows
             if not pays_as_it_goes(r.included, r.soft_limit, r.hard_limit)]  # no overdraft
    return seat_overdraft(leases, terms, start=start, end=end)


def _lease_end(expires_at: datetime | None, released_at: datetime | None, at: datetime) -> datetime | None:
    """A lease ends when released, or at its expiry once that has passed (freed lazily)."""
    if released_at is not None:
        return released_at
    return expires_at if expires_at is not None and expires_at <= at else None


async def _periods(
    session: AsyncSession, rows: Sequence[CustomerEntitlement], start: datetime, end: datetime, at: datetime
) -> tuple[PeriodOverage, ...]:
    """The usage periods of `rows` overlapping the window whose usage passed the soft limit
    (raised by the grants live at each instant, as a check then would), each at its peak."""
    first = rows[0]
    granted = await session.scalar(
        select(func.count()).select_from(GrantRecord).where(
            GrantRecord.tenant_id == first.tenant_id, GrantRecord.customer_id == first.customer_id,
            GrantRecord.feature_id == first.feature_id,
        )
    )
    out: list[PeriodOverage] = []
    for row in rows:
        low, high = max(start, row.active_from), min(end, row.active_to or end)
        if low >= high or pays_as_it_goes(row.included, row.soft_limit, row.hard_limit):
            continue
        every = usage_period(row)
        opening = period_at(every, low)[0]
        counters = await queries.counters_between(
            session, row.tenant_id, [row.id], to_micros(opening), to_micros(high)
        )
        for (_, period_us), (used, _) in sorted(counters.items()):
            period_start, period_end = period_at(every, from_micros(period_us))
            last = min(t for t in (period_end, row.active_to, at) if t is not None) - _TICK
            grants: tuple[Grant, ...] = ()
            carried = 0  # overage carried into the period and not yet added to its counter
            if granted or standing.rolls_over(row) or standing.may_carry(row):
                found = await standing.standing(session, row, last)
                grants, carried = found.grants, found.carry or 0
            peak = metered_peak(grants, standing.soft_limit(row), units(used + carried), last=last)
            if peak.overage > 0:
                out.append(PeriodOverage(period_start, period_end, peak.usage, peak.soft_limit, peak.overage))
    return tuple(out)


async def _denials(
    session: AsyncSession, tenant_id: str, customer_ids: set[str], start: datetime, end: datetime
) -> dict[tuple[str, str], int]:
    """(customer id, feature id) -> denials recorded in [start, end), for a batch of pairs at once
    (every pair scanned needs its count: one with denials is listed even without overdraft)."""
    if not customer_ids:
        return {}
    found = await session.execute(
        select(UsageDenial.customer_id, UsageDenial.feature_id, func.count())
        .where(UsageDenial.tenant_id == tenant_id, UsageDenial.customer_id.in_(customer_ids),
               UsageDenial.at >= start, UsageDenial.at < end)
        .group_by(UsageDenial.customer_id, UsageDenial.feature_id)
    )
    return {(c, f): int(n) for c, f, n in found}


async def _pairs(
    session: AsyncSession, filters: list[ColumnElement[bool]], after: str | None, *, limit: int
) -> list[tuple[tuple[str, str], list[CustomerEntitlement]]]:
    """The next (customer id, feature id) pairs after `after`, each with its rows in the window."""
    conditions = list(filters)
    if after is not None:
        customer_id, _, feature_id = after.partition(":")
        conditions.append(or_(CustomerEntitlement.customer_id > customer_id,
                              and_(CustomerEntitlement.customer_id == customer_id,
                                   CustomerEntitlement.feature_id > feature_id)))
    keys = (await session.execute(
        select(CustomerEntitlement.customer_id, CustomerEntitlement.feature_id)
        .where(*conditions)
        .group_by(CustomerEntitlement.customer_id, CustomerEntitlement.feature_id)
        .order_by(CustomerEntitlement.customer_id, CustomerEntitlement.feature_id)
        .limit(limit)
    )).all()
    if not keys:
        return []
    rows = await session.scalars(
        select(CustomerEntitlement)
        .where(*conditions, CustomerEntitlement.customer_id.in_({c for c, _ in keys}))
        .order_by(CustomerEntitlement.active_from)
    )
    by_pair: dict[tuple[str, str], list[CustomerEntitlement]] = defaultdict(list)
    for row in rows:
        by_pair[(row.customer_id, row.feature_id)].append(row)
    return [((c, f), by_pair[(c, f)]) for c, f in keys]
