"""What a tenant offers a customer who needs more: the plan tiers and the top-up packs.

Tiers follow `next_tier` from the customer's plan, each key at its latest published version
(what a customer would be moved to today). Plans carry no prices yet, so the chain itself is
the price order: by definition each next tier costs more than the one before it.

Top-ups are declared on the feature, in its metadata, so a tenant can offer them without code
or schema: `{"top_up": {"amount": 500000, "price": "49.00", "currency": "USD",
"expires_after_days": 90}}` (only `amount` is required). Buying one is a grant; an offer
that does not parse is ignored rather than failing a check or a report.

The catalogue is a handful of small tables read in three queries. The check path keeps one
per tenant and process, proven current by one read of a stamp (counts and latest change
times of plans and features) before each use; published plan versions never change, so the
stamp moves whenever anything the catalogue holds could have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database
from allotment.entitlements.engine import ZERO, Kind
from allotment.entitlements.models import Feature, Plan, PlanEntitlement, Subscription
from allotment.entitlements.projection import Limits, Tier, TopUpOffer

_MAX_CHAIN = 32  # a `next_tier` loop (a -> b -> a) is possible; stop walking well before


@dataclass(frozen=True)
class _PlanInfo:
    id: str
    key: str
    version: int
    name: str
    next_tier: str | None
    currency: str | None


@dataclass
class Catalogue:
    """Plans by id and by key (latest published), tier limits per feature, top-up offers."""

    by_id: dict[str, _PlanInfo] = field(default_factory=dict)
    latest: dict[str, _PlanInfo] = field(default_factory=dict)
    # (plan id, feature id) -> limits; None: unlimited access. Absent: not in the plan.
    limits: dict[tuple[str, str], Limits | None] = field(default_factory=dict)
    top_ups: dict[str, TopUpOffer] = field(default_factory=dict)

    def plan_key(self, plan_id: str) -> str | None:
        found = self.by_id.get(plan_id)
        return None if found is None else found.key

    def tiers(self, plan_key: str | None, feature_id: str) -> list[Tier]:
        """The plans after `plan_key` on its upgrade path that offer the feature, in order."""
        if plan_key is None:
            return []
        start = self.latest.get(plan_key)
        next_key = start.next_tier if start is not None else None
        seen, out = {plan_key}, []
        while next_key is not None and next_key not in seen and len(seen) < _MAX_CHAIN:
            seen.add(next_key)
            plan = self.latest.get(next_key)
            if plan is None:  # never published: nobody can be moved to it, nor beyond it
                break
            if (plan.id, feature_id) in self.limits:
                limits = self.limits[(plan.id, feature_id)]
                out.append(Tier(plan.key, plan.name, plan.version, limits, currency=plan.currency))
            next_key = plan.next_tier
        return out

    def top_up(self, feature_id: str) -> TopUpOffer | None:
        return self.top_ups.get(feature_id)


def top_up_offer(metadata: Mapping[str, Any] | None) -> TopUpOffer | None:
    """The feature's top-up offer from its metadata, or None when absent or malformed."""
    raw = (metadata or {}).get("top_up")
    if not isinstance(raw, Mapping):
        return None
    try:
        amount = _decimal(raw.get("amount"))
        price = None if raw.get("price") is None else _decimal(raw["price"])
    except (InvalidOperation, TypeError, ValueError):
        return None
    currency, days = raw.get("currency"), raw.get("expires_after_days")
    if amount <= 0 or (price is not None and price < 0):
        return None
    if currency is not None and not (isinstance(currency, str) and len(currency) == 3):
        return None
    if days is not None and not (isinstance(days, int) and not isinstance(days, bool) and days > 0):
        return None
    return TopUpOffer(amount, price, None if currency is None else currency.upper(), days)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    out = Decimal(str(value))
    if not out.is_finite():
        raise ValueError("not finite")
    return out


def _tier_limits(row: PlanEntitlement) -> tuple[bool, Limits | None]:
    """(offers the feature, its limits): counted kinds give limits, access means unlimited."""
    if row.kind in (Kind.METERED, Kind.SEATS):
        return True, Limits(row.included or ZERO, row.soft_limit, row.hard_limit)
    if row.kind == Kind.BOOLEAN and row.has_access:
        return True, None
    return False, None


async def load(session: AsyncSession, tenant_id: str) -> Catalogue:
    """The tenant's catalogue as it stands in this transaction."""
    out = Catalogue()
    for plan in await session.scalars(select(Plan).where(Plan.tenant_id == tenant_id).order_by(Plan.version)):
        info = _PlanInfo(plan.id, plan.key, plan.version, plan.name, plan.next_tier, plan.currency)
        out.by_id[plan.id] = info
        if plan.status == "published":
            out.latest[plan.key] = info
    published = [p.id for p in out.latest.values()]
    if published:
        found = await session.scalars(
            select(PlanEntitlement).where(
                PlanEntitlement.tenant_id == tenant_id, PlanEntitlement.plan_id.in_(published)
            )
        )
        for row in found:
            offered, limits = _tier_limits(row)
            if offered:
                out.limits[(row.plan_id, row.feature_id)] = limits
    features = await session.execute(
        select(Feature.id, Feature.metadata_).where(Feature.tenant_id == tenant_id, Feature.archived_at.is_(None))
    )
    for feature_id, metadata in features:
        offer = top_up_offer(metadata)
        if offer is not None:
            out.top_ups[feature_id] = offer
    return out


async def plan_keys(session: AsyncSession, tenant_id: str, subscription_ids: set[str]) -> dict[str, str]:
    """subscription id -> the key of its plan (a subscription never changes plan key)."""
    if not subscription_ids:
        return {}
    rows = await session.execute(
        select(Subscription.id, Plan.key)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(Subscription.tenant_id == tenant_id, Subscription.id.in_(sorted(subscription_ids)))
    )
    return {sub_id: key for sub_id, key in rows}


# --- per-process cache for the check path -----------------------------------------------------

_STAMP = """
SELECT (SELECT count(*) FROM plans WHERE tenant_id = {t}),
       (SELECT max(published_at) FROM plans WHERE tenant_id = {t}),
       (SELECT count(*) FROM features WHERE tenant_id = {t}),
       (SELECT max(updated_at) FROM features WHERE tenant_id = {t})
"""
_STAMP_PG, _STAMP_SQLITE = _STAMP.format(t="$1"), _STAMP.format(t="?1")
_CAPACITY = 10_000  # tenants per process; the whole map is dropped when full

_catalogues: dict[str, tuple[tuple[Any, ...], Catalogue]] = {}
_plan_of_subscription: dict[str, str] = {}


async def cached(db: Database, tenant_id: str) -> Catalogue:
    """The tenant's catalogue: one stamp read, and three more only when it changed."""
    rows = await db.point_read(_STAMP_PG, _STAMP_SQLITE, tenant_id)
    stamp = tuple(str(v) for v in rows[0])
    known = _catalogues.get(tenant_id)
    if known is not None and known[0] == stamp:
        return known[1]
    async with db.transaction(readonly=True) as session:
        catalogue = await load(session, tenant_id)
    if len(_catalogues) >= _CAPACITY:
        _catalogues.clear()
    _catalogues[tenant_id] = (stamp, catalogue)
    return catalogue


async def cached_plan_key(db: Database, tenant_id: str, subscription_id: str) -> str | None:
    """The plan key of a subscription, remembered for good (it never changes)."""
    key = _plan_of_subscription.get(subscription_id)
    if key is None:
        async with db.transaction(readonly=True) as session:
            key = (await plan_keys(session, tenant_id, {subscription_id})).get(subscription_id)
        if key is not None:
            if len(_plan_of_subscription) >= 100_000:
                _plan_of_subscription.clear()
            _plan_of_subscription[subscription_id] = key
    return key
