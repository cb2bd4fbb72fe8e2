"""Plans as another billing system defines them (Lago's plans and their usage charges).

Such a plan is a native plan, published at once. Each metered charge entitles its subscribers to
a feature measured by the charge's meter, counted over the plan's interval with nothing included
and no limit: that system bills usage, it does not cap it. What we do not model yet (prices,
trials, charge models) stays with the version as that system sent it (`external_document`).

A change is the plan's next published version, so subscriptions keep the version they are on
until migrated, as for any plan. It keeps what the version before entitles beyond the charges
(features, included units, limits set natively): that system cannot see them. Removing the plan archives every version and ends the
subscriptions on them now, as the other system's deletion terminates them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import external_subscriptions, features, plans, subscriptions
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import Feature, Plan
from allotment.entitlements.schemas import (
    BillingInterval,
    FeatureCreate,
    PlanCreate,
    PlanEntitlementIn,
)
from allotment.entitlements.values import APPLIES, of_row
from allotment.errors import AlreadyExists, Conflict, FieldError, NotFound, ValidationFailed
from allotment.metering.models import Meter


async def feature_for(session: AsyncSession, tenant_id: str, meter: Meter, *, field: str, actor: str,
                      at: datetime) -> str:
    """The key of the live feature counting all of the meter's usage (the oldest, when several
    do), made under the meter's key when there is none. `field` names the charge in an error."""
    if (found := await _measuring(session, tenant_id, meter)) is not None:
        return found
    try:
        async with session.begin_nested():
            made = await features.create(session, tenant_id, FeatureCreate(key=meter.key, name=meter.name,
                                                                           meter=meter.key), actor=actor, at=at,
                                         any_meter=True)
    except AlreadyExists:
        # A concurrent request may just have made it for the same meter: then it is the one.
        if (found := await _measuring(session, tenant_id, meter)) is not None:
            return found
        raise ValidationFailed(f"{field}: feature '{meter.key}' counts other usage",
                               errors=[FieldError(field, f"feature '{meter.key}' counts other usage than metric "
                                                         f"'{meter.key}'; give that feature another key")]) from None
    return made.feature.key


async def _measuring(session: AsyncSession, tenant_id: str, meter: Meter) -> str | None:
    rows = await session.scalars(
        select(Feature).where(Feature.tenant_id == tenant_id, Feature.meter_id == meter.id,
                              Feature.archived_at.is_(None)).order_by(Feature.id)
    )
    return next((f.key for f in rows if not f.meter_group_filter), None)


async def publish(
    session: AsyncSession, tenant_id: str, *, key: str, name: str, description: str | None,
    billing_interval: BillingInterval, currency: str | None, feature_keys: Iterable[str],
    document: dict[str, Any], actor: str, at: datetime, kept: Iterable[PlanEntitlementIn] = (), new: bool = False,
) -> plans.PlanView:
    """The plan's next version, published: version 1 of a new key, a change of an existing one.
    It entitles `feature_keys` as charges and what is `kept` from the version before (see `carried`).
    With `new`, a key that has a published version is AlreadyExists, also when a concurrent
    request published it after the caller looked (the draft would otherwise replace it)."""
    entitlements = {e.feature: e for e in kept}
    for k in feature_keys:  # two charges on one metric: one entitlement
        entitlements.setdefault(k, PlanEntitlementIn(feature=k, kind=Kind.METERED,
                                                     usage_period=plans.BILLING_PERIODS[billing_interval]))
    data = PlanCreate(key=key, name=name, description=description, billing_interval=billing_interval,
                      currency=currency, entitlements=list(entitlements.values()))
    try:
        async with session.begin_nested():  # a unique key refusing the version leaves the session usable
            await plans.create(session, tenant_id, data, actor=actor, at=at, external_document=document)
            if new and await is_published(session, tenant_id, key):
                raise AlreadyExists("plan", key)
    except Conflict:
        if new and await is_published(session, tenant_id, key):
            raise AlreadyExists("plan", key) from None
        raise
    return await plans.publish(session, tenant_id, key, actor=actor, at=at)


async def is_published(session: AsyncSession, tenant_id: str, key: str) -> bool:
    """Whether the plan `key` has a published version."""
    try:
        await plans.get(session, tenant_id, key)
    except NotFound:
        return False
    return True


async def carried(
    session: AsyncSession, previous: Plan, *, meter_ids: Collection[str], billing_interval: BillingInterval,
) -> tuple[list[PlanEntitlementIn], set[str]]:
    """What the plan's next version keeps of `previous`, and the meters that covers.

    The other system describes only the usage it charges for: every entitlement it cannot see
    (boolean, static, seats, metered without a meter) is kept as it is, and so is a metered one
    on a meter still charged, with its included units and limits (one counted over the old
    billing interval follows the new one). A metered one on a meter no charge has any more is
    dropped, as is one on a feature archived since (a new version cannot entitle it)."""
    old_period, new_period = plans.billing_period(previous), plans.BILLING_PERIODS[billing_interval]
    kept, covered = [], set()
    for key, row in (await plans.view(session, previous)).entitlements:
        feature = await session.get(Feature, row.feature_id)
        if feature is None or feature.archived_at is not None:
            continue
        kind = Kind(row.kind)
        values = {k: v for k, v in of_row(row).items() if k in APPLIES[kind]}
        if kind == Kind.METERED and feature.meter_id is not None:
            if feature.meter_id not in meter_ids:
                continue
            covered.add(feature.meter_id)
            if values["usage_period"] == old_period:
                values["usage_period"] = new_period
        kept.append(PlanEntitlementIn(feature=key, kind=kind, **values))
    return kept, covered


async def remove(session: AsyncSession, tenant_id: str, key: str, *, actor: str, at: datetime) -> None:
    """Archives every version of the plan and ends the subscriptions on them now (those started
    by another system are terminated there too, so their external id may start again)."""
    versions = await plans.retire(session, tenant_id, key, actor=actor, at=at)
    for sub in await subscriptions.live_on(session, tenant_id, [p.id for p in versions], at):
        if subscriptions.status_at(sub, at) == "canceled":
            continue  # ended with one canceled before it (a plan change scheduled after it)
        external = await external_subscriptions.of_native(session, tenant_id, sub.id)
        if external is not None:
            await external_subscriptions.terminate(session, tenant_id, external.row.system, external.row.external_id,
                                                   actor=actor, at=at)
        else:
            await subscriptions.cancel(session, tenant_id, sub.id, when="now", actor=actor, at=at)
