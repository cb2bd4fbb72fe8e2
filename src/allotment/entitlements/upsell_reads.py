"""Set-based reads behind upsell suggestions: one statement per kind of fact for many rows.

A report over thousands of customers must not cost queries per customer. Each function here
takes a batch of entitlement rows (a page) and answers for all of them at once: live counters
of their current periods, active seats, which have live grants, denials this period, the
customers' subjects, and recent usage from rollups (two meter queries per feature).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import String, and_, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers.models import CustomerSubject
from allotment.db import UTCDateTime
from allotment.entitlements.engine import ZERO
from allotment.entitlements.features import ADDITIVE
from allotment.entitlements.models import (
    CustomerEntitlement,
    EntitlementUsage,
    GrantRecord,
    SeatLease,
    UsageDenial,
)
from allotment.entitlements.projection import Recent
from allotment.errors import NotFound
from allotment.metering import meters
from allotment.metering import query as meter_query
from allotment.metering.aggregation import Aggregation
from allotment.metering.windows import MINUTE_US
from allotment.types import to_micros

TRAILING = (timedelta(days=1), timedelta(days=7))  # the recent windows a projection considers


async def counters(
    session: AsyncSession, tenant_id: str, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int, int | None]]:
    """(entitlement id, period start µs) -> (used, reserved, carried), for the keys that exist."""
    if not keys:
        return {}
    rows = await session.execute(
        select(
            EntitlementUsage.entitlement_id, EntitlementUsage.period_start,
            EntitlementUsage.used, EntitlementUsage.reserved, EntitlementUsage.carried,
        ).where(
            # One IN per key column, not a row-value IN: SQLite would read every counter of the
            # tenant for the latter, but looks each key of these up in the primary key. Rows of
            # other pairs it also finds are left out below.
            EntitlementUsage.tenant_id == tenant_id,
            EntitlementUsage.entitlement_id.in_(sorted({e for e, _ in keys})),
            EntitlementUsage.period_start.in_(sorted({p for _, p in keys})),
        )
    )
    wanted = set(keys)
    found = {(e, int(p)): (int(u), int(r), None if c is None else int(c)) for e, p, u, r, c in rows}
    return {key: value for key, value in found.items() if key in wanted}


async def active_seats(
    session: AsyncSession, tenant_id: str, customer_ids: Iterable[str], at: datetime
) -> dict[tuple[str, str], int]:
    """(customer id, feature id) -> live leases at `at`, whichever of the pair's rows holds them.

    Counting leases rather than the gauge makes the answer independent of whether expired
    leases were swept, or a plan change's leases adopted, yet (as `queries.active_seats`).
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(CustomerEntitlement.customer_id, CustomerEntitlement.feature_id, func.count())
        .select_from(SeatLease)
        .join(CustomerEntitlement, CustomerEntitlement.id == SeatLease.entitlement_id)
        .where(
            SeatLease.tenant_id == tenant_id,
            CustomerEntitlement.customer_id.in_(ids),
            SeatLease.released_at.is_(None),
            or_(SeatLease.expires_at.is_(None), SeatLease.expires_at > at),
        )
        .group_by(CustomerEntitlement.customer_id, CustomerEntitlement.feature_id)
    )
    return {(c, f): int(n) for c, f, n in rows}


async def with_live_grants(
    session: AsyncSession, tenant_id: str, customer_ids: Iterable[str], at: datetime
) -> set[tuple[str, str]]:
    """The (customer id, feature id) pairs with a grant live at `at`."""
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    rows = await session.execute(
        select(GrantRecord.customer_id, GrantRecord.feature_id).distinct().where(
            GrantRecord.tenant_id == tenant_id,
            GrantRecord.customer_id.in_(ids),
            GrantRecord.effective_at <= at,
            GrantRecord.voided_at.is_(None),
            or_(GrantRecord.expires_at.is_(None), GrantRecord.expires_at > at),
        )
    )
    return {(c, f) for c, f in rows}


async def denials_since(
    session: AsyncSession, tenant_id: str, since: Mapping[tuple[str, str], datetime]
) -> dict[tuple[str, str], tuple[int, datetime, Decimal]]:
    """(customer id, feature id) -> (denials at or after its own start, the latest one, the
    largest quantity refused).

    Each pair has its own period start, so the starts go in as a derived table (a UNION ALL
    of literals: portable, unlike VALUES with column names) and one grouped join counts.
    """
    if not since:
        return {}
    starts = union_all(*(
        select(
            literal(c, String()).label("customer_id"), literal(f, String()).label("feature_id"),
            literal(s, UTCDateTime()).label("since"),
        )
        for (c, f), s in since.items()
    )).subquery("starts")
    rows = await session.execute(
        select(starts.c.customer_id, starts.c.feature_id, func.count(), func.max(UsageDenial.at),
               func.max(UsageDenial.quantity))
        .select_from(starts)
        .join(UsageDenial, and_(
            UsageDenial.tenant_id == tenant_id,
            UsageDenial.customer_id == starts.c.customer_id,
            UsageDenial.feature_id == starts.c.feature_id,
            UsageDenial.at >= starts.c.since,
        ))
        .group_by(starts.c.customer_id, starts.c.feature_id)
    )
    return {(c, f): (int(n), latest, Decimal(largest)) for c, f, n, latest, largest in rows}


async def subjects(session: AsyncSession, tenant_id: str, customer_ids: Iterable[str]) -> dict[str, list[str]]:
    """customer id -> its subject keys."""
    ids = sorted(set(customer_ids))
    out: dict[str, list[str]] = defaultdict(list)
    if ids:
        rows = await session.execute(
            select(CustomerSubject.customer_id, CustomerSubject.subject_key).where(
                CustomerSubject.tenant_id == tenant_id, CustomerSubject.customer_id.in_(ids)
            )
        )
        for customer_id, subject in rows:
            out[customer_id].append(subject)
    return out


async def recent_usage(
    session: AsyncSession,
    tenant_id: str,
    meter_id: str,
    group_filter: Mapping[str, str],
    subjects_of: Mapping[str, list[str]],
    at: datetime,
) -> dict[str, list[Recent]]:
    """customer id -> what the feature's meter counted in each trailing window up to `at`.

    From rollups (and batches not yet folded), one query per window for all the customers.
    Windows end at the end of the current minute, so they are whole minutes (no raw events
    are read) and include what was reported a moment ago. Only additive meters
    (SUM, COUNT) describe usage that accumulates; others give no recent rate.
    """
    owner = {s: c for c, found in subjects_of.items() for s in found}
    if not owner:
        return {}
    try:
        meter = await meters.get(session, tenant_id, meter_id)
    except NotFound:
        return {}  # the meter was deleted since the feature was linked to it
    if Aggregation(meter.aggregation) not in ADDITIVE:
        return {}
    end = (to_micros(at) // MINUTE_US + 1) * MINUTE_US
    out: dict[str, list[Recent]] = defaultdict(list)
    for window in TRAILING:
        found = await meter_query.query(session, tenant_id, meter, meter_query.MeterQuery(
            start_us=end - int(window.total_seconds()) * 1_000_000, end_us=end,
            subjects=sorted(owner), group_by=["subject"],
            filter_group_by={name: [value] for name, value in group_filter.items()}, dense=False,
        ))
        totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for row in found:
            if row.value is not None and row.subject in owner:
                totals[owner[row.subject]] += row.value
        for customer_id in subjects_of:
            out[customer_id].append(Recent(totals.get(customer_id, ZERO), window))
    return out
