"""A customer's entitlements as they stand now: what a check of nothing would report.

Read-only: the same lookup and counter reads as a real-time check (`check.py`), judged by
the same engine, but nothing is consumed and no denial is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.entitlements import features, queries, standing
from allotment.entitlements.check import (
    Counted,
    in_force,
    live_entitlement,
    metered_entitlement,
    read_usage,
    units,
)
from allotment.entitlements.engine import (
    ONE,
    ZERO,
    Grant,
    Kind,
    burn,
    burn_order,
    decide,
    decide_seats,
    pays_as_it_goes,
)
from allotment.entitlements.models import CustomerEntitlement, Feature
from allotment.entitlements.recurring import grant_id_of
from allotment.entitlements.standing import ROLLED_OVER, included_until
from allotment.errors import NotFound


@dataclass(frozen=True)
class GrantBalance:
    """A grant as it stands in the current period: `amount` at its start, `balance` left now."""

    grant: Grant
    balance: Decimal


@dataclass(frozen=True)
class EntitlementState:
    """One entitlement and where the customer stands on it; numbers only for counted kinds.

    soft_limit and hard_limit are the effective limits, as a check reports them.
    """

    feature_key: str
    row: CustomerEntitlement
    has_access: bool
    config: dict[str, Any] | None = None
    usage: Decimal | None = None
    reserved: Decimal | None = None  # metered: held by open reservations, spent like usage
    included: Decimal | None = None
    soft_limit: Decimal | None = None
    hard_limit: Decimal | None = None
    balance: Decimal | None = None
    overage: Decimal | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    grants: tuple[GrantBalance, ...] = ()  # metered: in burn order
    rolled_over: Decimal | None = None  # metered with included_rollover: units rolled into this period
    carried: Decimal | None = None  # metered: overage carried into this period, counted in `usage`

    @property
    def in_overdraft(self) -> bool:
        """Past the soft limit (allowed, but flagged)."""
        row = self.row
        return (self.usage is not None and self.soft_limit is not None and self.usage > self.soft_limit
                and not pays_as_it_goes(row.included, row.soft_limit, row.hard_limit))


async def state_of(
    session: AsyncSession, row: CustomerEntitlement, feature_key: str, at: datetime, *, later: Decimal = ZERO
) -> EntitlementState:
    """The state of one entitlement row at `at`; `later` is usage its counter holds that came
    after `at` (a state asked for an instant past), left out."""
    kind = Kind(row.kind)
    if kind is Kind.BOOLEAN:
        return EntitlementState(feature_key, row, has_access=row.has_access)
    if kind is Kind.STATIC:
        return EntitlementState(feature_key, row, has_access=True, config=dict(row.config or {}))
    if kind is Kind.SEATS:
        return await _seats_state(session, row, feature_key, at)
    return judged(row, feature_key, await read_usage(session, row, at), at, later=later)


def judged(
    row: CustomerEntitlement, feature_key: str, counted: Counted, at: datetime, *, later: Decimal = ZERO
) -> EntitlementState:
    """The state of metered `row` at `at` from its counter as read for the period holding
    `at`, less `later` (usage counted for later instants): pure, so a history can judge many
    instants of one period from one read."""
    if later:
        counted = replace(counted, used=counted.used - later)
    # The numbers of a decision do not depend on the quantity asked for; the verdict does,
    # so access is judged on the usage itself: anything left below the hard limit.
    d = decide(
        metered_entitlement(row), usage=counted.used, reserved=counted.reserved, grants=counted.grants,
        quantity=ONE, at=at,
    )
    spent = counted.used + counted.reserved
    left = burn(counted.grants, row.included or ZERO, spent, at,
                included_until=included_until(row, counted.period_end)).grants
    stored = [g for g in counted.grants if g.id != ROLLED_OVER]
    rolled = sum((g.amount for g in counted.grants if g.id == ROLLED_OVER), ZERO)
    breakdown = tuple(GrantBalance(replace(g, id=grant_id_of(g.id)), left[g.id])
                      for g in burn_order(_latest_instances(tuple(stored))))
    return EntitlementState(
        feature_key, row, has_access=d.hard_limit is None or spent < d.hard_limit,
        usage=d.usage, reserved=counted.reserved, included=d.included, soft_limit=d.soft_limit,
        hard_limit=d.hard_limit, balance=d.balance, overage=d.overage,
        period_start=counted.period_start, period_end=counted.period_end, grants=breakdown,
        rolled_over=rolled if standing.rolls_over(row) else None, carried=counted.carried,
    )


async def _seats_state(
    session: AsyncSession, row: CustomerEntitlement, feature_key: str, at: datetime
) -> EntitlementState:
    """Active seats from the live gauge (leases already past their expiry excluded)."""
    active = units(await queries.active_seats(session, row, at=at))
    d = decide_seats(active, ONE, row.included or ZERO, row.soft_limit, row.hard_limit)
    return EntitlementState(
        feature_key, row, has_access=d.hard_limit is None or active < d.hard_limit,
        usage=active, included=d.included, soft_limit=d.soft_limit, hard_limit=d.hard_limit,
        balance=d.balance, overage=d.overage,
    )


async def list_states(
    session: AsyncSession, tenant_id: str, customer_key: str, *, at: datetime,
    limit: int | None = None, after: tuple[str, str] | None = None,
) -> list[EntitlementState]:
    """The entitlements of the customer in force at `at`, by feature key (then feature id: an
    archived feature a customer keeps may share its key), `limit` of them after the
    (key, id) `after`, or all; unknown customer: 404."""
    customer = await customers.find(session, tenant_id, customer_key)
    query = (
        select(CustomerEntitlement, Feature.key)
        .join(Feature, Feature.id == CustomerEntitlement.feature_id)
        .where(*in_force(tenant_id, customer.id, at))
        .order_by(Feature.key, Feature.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(Feature.key, Feature.id) > tuple_(*after))
    return [await state_of(session, row, key, at) for row, key in await session.execute(query)]


async def get_state(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, *, at: datetime
) -> EntitlementState:
    """One entitlement; an unknown customer or feature, or no entitlement to it, is a 404."""
    customer = await customers.find(session, tenant_id, customer_key)
    feature = await features.held_by(session, tenant_id, feature_key, customer_id=customer.id, at=at)
    row = await live_entitlement(session, tenant_id, customer.id, feature.id, at)
    if row is None:
        raise NotFound("entitlement", feature_key)
    return await state_of(session, row, feature.key, at)


def _latest_instances(grants: tuple[Grant, ...]) -> list[Grant]:
    """The grants of the period, a recurring one as its latest instance: what it holds now."""
    latest: dict[str, Grant] = {}
    for grant in grants:
        key = grant_id_of(grant.id)
        if key not in latest or grant.effective_at > latest[key].effective_at:
            latest[key] = grant
    return list(latest.values())
