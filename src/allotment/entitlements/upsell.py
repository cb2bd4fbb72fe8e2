"""Upsell suggestions: when a customer nears or passes a limit, what would cover the period.

For each counted entitlement (metered, seats) a suggestion is the customer's standing (usage,
effective limits, denials this period), the usage projected to the period end
(`projection.project`: period-to-date and the last 24 hours / 7 days from rollups) and the
cheapest cover (`projection.pick`: the first tier on the `next_tier` path that fits, or
top-ups of the feature's offer, or contact sales). See docs/upsell.md.

Three ways in:
- `suggest_on_crossing`, called by the hooks that see usage move past a threshold, into
  overdraft or to a denial: emits `upsell.suggested` once per entitlement and period, in the
  caller's transaction (the outbox), and only when the projection does not fit;
- `for_customer` and `report`, read-only, set-based (upsell_reads.py): a page of rows costs
  the same few statements whatever its size;
- `upsell_hint.hint`, for the check response: only on overdraft or deny, from the check's own
  numbers and the per-process catalogue (one stamp read); nothing for a check within limits.

Seats are a gauge, not a flow: their projection is the active count, they have no top-ups
(grants are metered), and their "period" (for denials and once-per-period emission) is the
usage period of the row, monthly from its anchor unless set.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.entitlements import check, features, offers, standing
from allotment.entitlements import upsell_reads as reads
from allotment.entitlements.engine import ZERO, Kind, is_live, pays_as_it_goes
from allotment.entitlements.models import CustomerEntitlement, Feature
from allotment.entitlements.periods import period_at
from allotment.entitlements.projection import (
    Action,
    Limits,
    Pick,
    Projection,
    Recent,
    pick,
    project,
)
from allotment.entitlements.schemas import (
    ProjectionRead,
    UpsellPlanRead,
    UpsellRead,
    UpsellSuggestionRead,
    UpsellTopUpRead,
)
from allotment.errors import ValidationFailed
from allotment.notifications import service as notifications
from allotment.types import money, to_micros

NEAR_LIMIT = Decimal("0.8")  # of the soft limit: a report candidate from here on
EVENT = "upsell.suggested"
COUNTED = (Kind.METERED, Kind.SEATS)
_CHUNK = 200  # rows judged per round of set-based reads


class Status(enum.StrEnum):
    WITHIN_LIMIT = "within_limit"
    NEAR_LIMIT = "near_limit"
    OVERDRAFT = "overdraft"
    DENIED = "denied"


@dataclass(frozen=True)
class Suggestion:
    """One counted entitlement: standing, projection and the pick (action `none`: it fits).

    `limits` are effective (raised by live grants); usage excludes `reserved`, which counts
    as spent for every comparison, as in a check.
    """

    row: CustomerEntitlement
    customer_key: str
    feature_key: str
    plan_key: str | None
    usage: Decimal
    reserved: Decimal
    limits: Limits
    period_start: datetime | None
    period_end: datetime | None
    projection: Projection
    pick: Pick
    denials: int = 0
    last_denied_at: datetime | None = None

    @property
    def spent(self) -> Decimal:
        return self.usage + self.reserved

    @property
    def in_overdraft(self) -> bool:
        return _in_overdraft(self.row, self.spent, self.limits)

    @property
    def near_limit(self) -> bool:
        return _near_limit(self.spent, self.limits)

    @property
    def status(self) -> Status:
        if self.denials:
            return Status.DENIED
        if self.in_overdraft:
            return Status.OVERDRAFT
        return Status.NEAR_LIMIT if self.near_limit else Status.WITHIN_LIMIT

    def matches(self, wanted: Status | None) -> bool:
        """A report candidate; with `wanted`, one in that condition (overdraft includes denied ones
        still past the soft limit, denied includes any denial this period)."""
        if wanted is None:
            return self.status is not Status.WITHIN_LIMIT
        return {
            Status.DENIED: self.denials > 0,
            Status.OVERDRAFT: self.in_overdraft,
            Status.NEAR_LIMIT: self.near_limit,
            Status.WITHIN_LIMIT: self.status is Status.WITHIN_LIMIT,
        }[wanted]


@dataclass(frozen=True)
class _Item:
    """A row to judge, with the names and meter link its suggestion needs."""

    row: CustomerEntitlement
    customer_key: str
    feature_key: str
    meter_id: str | None
    group_filter: dict[str, str]


@dataclass(frozen=True)
class _Standing:
    item: _Item
    usage: Decimal
    reserved: Decimal
    extra: Decimal  # what live grants add to both limits
    period: tuple[datetime, datetime | None]
    denials: int = 0
    last_denied_at: datetime | None = None
    largest_denied: Decimal = ZERO  # the largest quantity refused this period

    @property
    def limits(self) -> Limits:
        row = self.item.row
        return Limits(row.included or ZERO, row.soft_limit, row.hard_limit).raised(self.extra)

    def is_candidate(self) -> bool:
        spent, limits = self.usage + self.reserved, self.limits
        return self.denials > 0 or _in_overdraft(self.item.row, spent, limits) or _near_limit(spent, limits)


def _in_overdraft(row: CustomerEntitlement, spent: Decimal, limits: Limits) -> bool:
    """Past the soft limit, on an entitlement that has one (pay as you go has none)."""
    return spent > limits.soft and not pays_as_it_goes(row.included, row.soft_limit, row.hard_limit)


def _near_limit(spent: Decimal, limits: Limits) -> bool:
    """From NEAR_LIMIT of the soft limit up to it."""
    soft = limits.soft
    return soft > 0 and NEAR_LIMIT * soft <= spent <= soft


def _suggestion(
    s: _Standing, catalogue: offers.Catalogue, plan_key: str | None, recent: Sequence[Recent], at: datetime
) -> Suggestion:
    row, (start, end) = s.item.row, s.period
    spent = s.usage + s.reserved
    if row.kind == Kind.SEATS:
        projection = Projection(spent, spent, ZERO, "seats")
        top_up = None  # grants, hence top-ups, are metered only
    else:
        projection = project(spent, period_start=start, period_end=end, at=at, recent=recent)
        top_up = catalogue.top_up(row.feature_id)
    if s.denials:  # room for the largest refused request too, as a refused check's hint asks
        wanted = spent + s.largest_denied
        if wanted > projection.projected:
            projection = replace(projection, projected=wanted)
    tiers = catalogue.tiers(plan_key, row.feature_id)
    chosen = pick(projection.projected, s.limits, tiers, top_up=top_up, extra=s.extra)
    if chosen.action is Action.CONTACT_SALES and pays_as_it_goes(row.included, row.soft_limit, row.hard_limit):
        chosen = Pick(Action.NONE)  # pay as you go: past any credit, use is billed, never refused
    return Suggestion(
        row, s.item.customer_key, s.item.feature_key, plan_key, s.usage, s.reserved, s.limits,
        start, end, projection, chosen, s.denials, s.last_denied_at,
    )


# --- after usage moved ------------------------------------------------------------------------


async def suggest_on_crossing(
    session: AsyncSession,
    tenant_id: str,
    row: CustomerEntitlement,
    *,
    usage: Decimal,
    period_start: datetime,
    period_end: datetime | None,
    at: datetime,
) -> Suggestion | None:
    """Emit `upsell.suggested` for the row's period if the projection does not fit.

    Call it in the transaction that moved usage past a threshold, into overdraft or to a
    denial; `usage` is the period's usage (reserved included) after the move. Returns the
    suggestion this call emitted; None when the projection fits, the row does not count, or
    the suggestion for this entitlement and period was emitted before (by anyone).
    """
    if row.kind not in COUNTED:
        return None
    if await notifications.was_emitted(session, tenant_id, dedupe_key(row, period_start)):
        return None  # once per period: later crossings need no projection
    extra = (await standing.standing(session, row, at)).extra(at) if row.kind == Kind.METERED else ZERO
    customer = await customers.get(session, tenant_id, row.customer_id)
    feature = await session.get(Feature, row.feature_id)
    assert feature is not None  # a row's feature is never deleted, only archived
    item = _Item(row, customer.customer.key, feature.key, feature.meter_id, dict(feature.meter_group_filter or {}))
    recent: list[Recent] = []
    if row.kind == Kind.METERED and feature.meter_id is not None:
        found = await reads.recent_usage(
            session, tenant_id, feature.meter_id, item.group_filter, {row.customer_id: customer.subject_keys}, at
        )
        recent = found.get(row.customer_id, [])
    catalogue = await offers.load(session, tenant_id)
    plan_key = await _plan_key(session, tenant_id, row)
    # The period's denials, as the customer's upsell counts them: the ask may come from a
    # refused request, whose quantity is what the suggestion has to make room for.
    pair = (row.customer_id, row.feature_id)
    denied = await reads.denials_since(session, tenant_id, {pair: period_start})
    s = _with_denials(_Standing(item, usage, ZERO, extra, (period_start, period_end)), denied.get(pair))
    suggestion = _suggestion(s, catalogue, plan_key, recent, at)
    if suggestion.pick.action is Action.NONE:
        return None
    emitted = await notifications.emit(
        session, tenant_id, type=EVENT, dedupe_key=dedupe_key(row, period_start),
        customer_id=row.customer_id, payload={**read(suggestion).model_dump(mode="json"), "at": at},
        at=at,
    )
    return suggestion if emitted else None


def period_of(row: CustomerEntitlement, at: datetime) -> tuple[datetime, datetime | None]:
    """The row's usage period containing `at`; for seats (a gauge) monthly from the row's anchor."""
    return period_at(check.usage_period(row), at)


def dedupe_key(row: CustomerEntitlement, period_start: datetime) -> str:
    """Once per entitlement and period: a new period, or a new row (plan change), may emit again."""
    return f"upsell:{row.id}:{to_micros(period_start)}"


async def _plan_key(session: AsyncSession, tenant_id: str, row: CustomerEntitlement) -> str | None:
    if row.subscription_id is None:
        return None
    return (await offers.plan_keys(session, tenant_id, {row.subscription_id})).get(row.subscription_id)


# --- reads ----------------------------------------------------------------------------------


def _in_force_query(tenant_id: str, at: datetime) -> Any:
    return (
        select(CustomerEntitlement, Customer.key, Feature.key, Feature.meter_id, Feature.meter_group_filter)
        .join(Customer, Customer.id == CustomerEntitlement.customer_id)
        .join(Feature, Feature.id == CustomerEntitlement.feature_id)
        .where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.kind.in_([str(k) for k in COUNTED]),
            CustomerEntitlement.active_from <= at,
            or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > at),
            Customer.deleted_at.is_(None),
            Feature.archived_at.is_(None),
        )
    )


def _items(rows: Any) -> list[_Item]:
    return [_Item(row, ckey, fkey, meter_id, dict(group or {})) for row, ckey, fkey, meter_id, group in rows]


async def for_customer(
    session: AsyncSession, tenant_id: str, customer_key: str, *, at: datetime,
    limit: int | None = None, after: tuple[str, str] | None = None,
) -> list[Suggestion]:
    """The customer's counted features by (feature key, id) (an archived feature the customer
    keeps may share its key), `limit` of them after `after`, or all; unknown customer: 404."""
    customer = await customers.find(session, tenant_id, customer_key)
    query = (_in_force_query(tenant_id, at).where(CustomerEntitlement.customer_id == customer.id)
             .order_by(Feature.key, Feature.id).limit(limit))
    if after is not None:
        query = query.where(tuple_(Feature.key, Feature.id) > tuple_(*after))
    found = await session.execute(query)
    catalogue = await offers.load(session, tenant_id)
    return await _evaluate(session, tenant_id, _items(found), catalogue, at=at, candidates_only=False)


async def report(
    session: AsyncSession,
    tenant_id: str,
    *,
    at: datetime,
    status: Status | None = None,
    feature: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> tuple[list[Suggestion], str | None]:
    """Candidates (near the soft limit, past it, or denied this period) in entitlement id order.

    Returns the page and the id to continue after (None: nothing more). Rows are judged in
    chunks with set-based reads until the page is full, so a sparse filter costs more chunks,
    never more statements per row.
    """
    if status is Status.WITHIN_LIMIT:
        raise ValidationFailed.on("status", "must be near_limit, overdraft or denied")
    stmt = _in_force_query(tenant_id, at)
    if feature is not None:
        stmt = stmt.where(CustomerEntitlement.feature_id == (await features.get(session, tenant_id, feature, archived=True)).id)
    catalogue = await offers.load(session, tenant_id)
    page: list[Suggestion] = []
    while True:
        chunk_stmt = stmt if after is None else stmt.where(CustomerEntitlement.id > after)
        items = _items(await session.execute(chunk_stmt.order_by(CustomerEntitlement.id).limit(_CHUNK)))
        if not items:
            return page, None
        judged = await _evaluate(session, tenant_id, items, catalogue, at=at, candidates_only=True)
        for s in judged:
            if s.matches(status):
                page.append(s)
                if len(page) == limit:
                    return page, s.row.id
        if len(items) < _CHUNK:
            return page, None
        after = items[-1].row.id


async def _evaluate(
    session: AsyncSession,
    tenant_id: str,
    items: list[_Item],
    catalogue: offers.Catalogue,
    *,
    at: datetime,
    candidates_only: bool,
) -> list[Suggestion]:
    """Suggestions for a batch of rows, in the order given, in a fixed number of statements."""
    standings = await _standings(session, tenant_id, items, at)
    if candidates_only:
        standings = [s for s in standings if s.is_candidate()]
    if not standings:
        return []
    recent = await _recent(session, tenant_id, standings, at)
    subs = {s.item.row.subscription_id for s in standings if s.item.row.subscription_id is not None}
    plan_of = await offers.plan_keys(session, tenant_id, subs)
    return [
        _suggestion(
            s, catalogue, plan_of.get(s.item.row.subscription_id or ""),
            recent.get((s.item.row.customer_id, s.item.row.feature_id), []), at,
        )
        for s in standings
    ]


async def _standings(session: AsyncSession, tenant_id: str, items: list[_Item], at: datetime) -> list[_Standing]:
    periods = {i.row.id: period_at(check.usage_period(i.row), at) for i in items}
    metered = [i for i in items if i.row.kind == Kind.METERED]
    seat_customers = {i.row.customer_id for i in items if i.row.kind == Kind.SEATS}
    counted = await reads.counters(session, tenant_id, [(i.row.id, to_micros(periods[i.row.id][0])) for i in metered])
    held = await reads.active_seats(session, tenant_id, seat_customers, at)
    granted = await reads.with_live_grants(session, tenant_id, {i.row.customer_id for i in metered}, at)
    out: list[_Standing] = []
    for item in items:
        row, period = item.row, periods[item.row.id]
        pair = (row.customer_id, row.feature_id)
        if row.kind == Kind.SEATS:
            out.append(_Standing(item, Decimal(held.get(pair, 0)), ZERO, ZERO, period))
            continue
        used, reserved, carried = counted.get((row.id, to_micros(period[0])), (0, 0, None))
        if pair in granted or (standing.may_carry(row) and carried is None) or standing.rolls_over(row):
            # Grants hold what earlier periods left them, a carry may not be fixed yet, and
            # included units may have rolled in: the exact per-row replay, for the rows that need it.
            exact = await check.read_usage(session, row, at)
            extra = sum((g.amount for g in exact.grants if is_live(g, at)), ZERO)
            out.append(_Standing(item, exact.used, exact.reserved, extra, period))
        else:
            out.append(_Standing(item, check.units(used), check.units(reserved), ZERO, period))
    denied = await reads.denials_since(session, tenant_id, {(s.item.row.customer_id, s.item.row.feature_id): s.period[0] for s in out})
    return [_with_denials(s, denied.get((s.item.row.customer_id, s.item.row.feature_id))) for s in out]


def _with_denials(s: _Standing, found: tuple[int, datetime, Decimal] | None) -> _Standing:
    if found is None:
        return s
    return replace(s, denials=found[0], last_denied_at=found[1], largest_denied=found[2])


async def _recent(
    session: AsyncSession, tenant_id: str, standings: list[_Standing], at: datetime
) -> dict[tuple[str, str], list[Recent]]:
    """(customer id, feature id) -> trailing usage, for metered rows whose feature has a meter."""
    by_feature: dict[str, list[_Standing]] = defaultdict(list)
    for s in standings:
        if s.item.row.kind == Kind.METERED and s.item.meter_id is not None:
            by_feature[s.item.row.feature_id].append(s)
    if not by_feature:
        return {}
    subjects = await reads.subjects(
        session, tenant_id, {s.item.row.customer_id for group in by_feature.values() for s in group}
    )
    out: dict[tuple[str, str], list[Recent]] = {}
    for feature_id, group in by_feature.items():
        first = group[0].item
        assert first.meter_id is not None
        wanted = {s.item.row.customer_id: subjects.get(s.item.row.customer_id, []) for s in group}
        found = await reads.recent_usage(session, tenant_id, first.meter_id, first.group_filter, wanted, at)
        for customer_id, recent in found.items():
            out[(customer_id, feature_id)] = recent
    return out


# --- API shape (also the webhook payload) ---------------------------------------------------


def read(s: Suggestion) -> UpsellRead:
    limits, chosen = s.limits, s.pick
    plan = None
    if chosen.plan is not None:
        tier = chosen.plan.limits
        plan = UpsellPlanRead(
            key=chosen.plan.plan_key, name=chosen.plan.name, version=chosen.plan.version,
            covers=chosen.covers or "soft", unlimited=tier is None,
            included=None if tier is None else tier.included,
            soft_limit=None if tier is None else tier.soft,
            hard_limit=None if tier is None else tier.hard_limit,
        )
    top_up = None
    if chosen.top_up is not None:
        t = chosen.top_up
        currency = t.offer.currency
        top_up = UpsellTopUpRead(
            count=t.count, units=t.units, amount=t.offer.amount,
            price=None if t.offer.price is None else money(t.offer.price, currency),
            total_price=None if t.total_price is None else money(t.total_price, currency),
            currency=currency, expires_after_days=t.offer.expires_after_days,
        )
    return UpsellRead(
        customer=s.customer_key, customer_id=s.row.customer_id, feature=s.feature_key,
        entitlement_id=s.row.id, kind=s.row.kind,  # type: ignore[arg-type]
        current_plan=s.plan_key, status=s.status.value, in_overdraft=s.in_overdraft,
        usage=s.usage, reserved=s.reserved, included=limits.included, soft_limit=limits.soft,
        hard_limit=limits.hard_limit, overage=max(ZERO, s.spent - limits.soft),
        period_start=s.period_start, period_end=s.period_end, denials=s.denials,
        last_denied_at=s.last_denied_at,
        projection=ProjectionRead(
            usage_at_period_end=s.projection.projected, rate_per_day=s.projection.rate_per_day,
            basis=s.projection.basis,
        ),
        suggestion=UpsellSuggestionRead(action=chosen.action.value, plan=plan, top_up=top_up),
    )
