"""Per-customer overrides of plan values, and ad-hoc entitlements without any plan.

Both are rows of their own (source `override` / `adhoc`) that take the feature over from the
plan: provisioning leaves a feature so held alone, so an override survives plan changes until
it is removed, and removing it gives the feature back to the plan at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.db import flush_unique
from allotment.entitlements import audit, features, provisioning
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement, Feature
from allotment.entitlements.schemas import AdhocIn, OverrideIn
from allotment.entitlements.values import APPLIES, normalize, of_row
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import new_id

_PLACEMENT = {"usage_anchor", "time_zone", "starts_at"}


@dataclass
class EntitlementView:
    row: CustomerEntitlement
    customer_key: str
    feature_key: str


async def _targets(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, *, held_at: datetime | None = None
) -> tuple[str, Feature]:
    """The customer, and the feature: with `held_at`, the one the customer holds then (an
    archived feature whose key was taken again stays its own: features.held_by); without it,
    a live feature (nothing new is made on an archived one)."""
    customer = await customers.find(session, tenant_id, customer_key)
    if held_at is None:
        return customer.id, await features.get(session, tenant_id, feature_key)
    return customer.id, await features.held_by(session, tenant_id, feature_key, customer_id=customer.id, at=held_at)


def _live(rows: list[CustomerEntitlement], at: datetime) -> CustomerEntitlement | None:
    return next((r for r in rows if r.active_from <= at), None)


async def set_override(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    feature_key: str,
    data: OverrideIn,
    *,
    actor: str,
    at: datetime,
) -> EntitlementView:
    """Replace the values the customer has for a feature now; unsent fields keep theirs."""
    customer_id, feature = await _targets(session, tenant_id, customer_key, feature_key, held_at=at)
    rows = await provisioning.open_rows(session, tenant_id, customer_id, at, feature_id=feature.id)
    current = _live(rows, at)
    if current is None:
        raise NotFound("entitlement", f"{customer_key}/{feature_key}")
    if current.source == "adhoc":
        raise Conflict(f"'{feature_key}' is an ad-hoc entitlement of '{customer_key}'; it has no plan value to override")
    planned = await provisioning.planned_values(session, tenant_id, customer_id, feature.id, at)
    values = _merged(current, data, planned)
    before = audit.snapshot(current)
    for row in rows:
        await provisioning.close(session, row, actor=actor, at=at)
    await session.flush()
    row = _row(
        tenant_id, customer_id, feature.id, "override", values,
        usage_anchor=data.usage_anchor or current.usage_anchor,
        time_zone=data.time_zone or current.time_zone, at=at,
    )
    return await _added(session, row, "entitlement.overridden", before, customer_key, feature, actor=actor, at=at)


def _merged(current: CustomerEntitlement, data: OverrideIn, planned: dict[str, Any] | None) -> dict[str, Any]:
    """The override's values: those sent, then the current row's (or, when the kind changes,
    the plan's values of that kind, as an override the plan's kind would keep them)."""
    given = data.model_dump(exclude_unset=True, exclude=_PLACEMENT)
    kind = Kind(given.pop("kind", None) or current.kind)
    base = of_row(current) if kind == current.kind else planned
    kept = {k: base[k] for k in APPLIES[kind]} if base is not None and base["kind"] == kind else {}
    return normalize(kind, kept | given)


async def remove_override(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, *, actor: str, at: datetime
) -> None:
    """The feature goes back to what the plan says."""
    await _remove(session, tenant_id, customer_key, feature_key, "override", actor=actor, at=at)


async def create_adhoc(
    session: AsyncSession, tenant_id: str, customer_key: str, data: AdhocIn, *, actor: str, at: datetime,
    metadata: dict[str, str] | None = None,
) -> EntitlementView:
    """`metadata` is kept for the OpenMeter surface, whose entitlements carry it."""
    customer_id, feature = await _targets(session, tenant_id, customer_key, data.feature)
    if await provisioning.open_rows(session, tenant_id, customer_id, at, feature_id=feature.id):
        raise Conflict(
            f"customer '{customer_key}' already has an entitlement to '{data.feature}'; override it instead"
        )
    values = normalize(data.kind, data.model_dump(exclude={"feature", "kind"} | _PLACEMENT))
    start = at
    if data.starts_at is not None:
        if data.starts_at > at:
            raise ValidationFailed.on("starts_at", "must not be in the future")
        start = await provisioning.backdated_start(session, tenant_id, customer_id, feature.id, data.starts_at, at=at)
    row = _row(
        tenant_id, customer_id, feature.id, "adhoc", values,
        usage_anchor=data.usage_anchor or start, time_zone=data.time_zone, at=at, active_from=start,
    )
    row.metadata_ = metadata
    view = await _added(session, row, "entitlement.adhoc_created", None, customer_key, feature, actor=actor, at=at)
    await provisioning.count_past_events(session, row, at=at)
    return view


async def replace_adhoc(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    data: AdhocIn,
    *,
    replaced: CustomerEntitlement,
    actor: str,
    at: datetime,
    metadata: dict[str, str] | None = None,
) -> EntitlementView:
    """End ad-hoc entitlement `replaced` at `at` and create `data` from then on, in one
    transaction: the customer is never without an entitlement to the feature, and a plan that
    also offers it cannot take it over in between (provisioning runs once the new row exists).
    The new row starts where the old one ends, so it cannot reach back over it: usage of the
    current period carries over when both share the period's start (provisioning)."""
    if replaced.source != "adhoc" or (replaced.active_to is not None and replaced.active_to <= at):
        raise NotFound("entitlement", replaced.id)
    if (await features.get(session, tenant_id, data.feature)).id != replaced.feature_id:
        raise ValidationFailed.on("feature", "must be the feature of the entitlement it replaces")
    await provisioning.close(session, replaced, actor=actor, at=at)
    await session.flush()
    return await create_adhoc(session, tenant_id, customer_key, data, actor=actor, at=at, metadata=metadata)


async def remove_adhoc(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, *, actor: str, at: datetime
) -> None:
    await _remove(session, tenant_id, customer_key, feature_key, "adhoc", actor=actor, at=at)


async def _remove(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    feature_key: str,
    source: str,
    *,
    actor: str,
    at: datetime,
) -> None:
    # An archived feature's entitlements stay until removed: removing them names it as well.
    customer_id, feature = await _targets(session, tenant_id, customer_key, feature_key, held_at=at)
    rows = await provisioning.open_rows(session, tenant_id, customer_id, at, feature_id=feature.id)
    held = [r for r in rows if r.source == source]  # an override may end with its plan later
    if not held:
        raise NotFound(source if source == "override" else "entitlement", f"{customer_key}/{feature_key}")
    await provisioning.close(session, held[0], actor=actor, at=at)
    await session.flush()
    await provisioning.reprovision(session, tenant_id, customer_id, actor=actor, at=at)


def _row(
    tenant_id: str,
    customer_id: str,
    feature_id: str,
    source: str,
    values: dict[str, Any],
    *,
    usage_anchor: datetime | None,
    time_zone: str,
    at: datetime,
    active_from: datetime | None = None,
) -> CustomerEntitlement:
    return CustomerEntitlement(
        id=new_id("ent"), tenant_id=tenant_id, customer_id=customer_id, feature_id=feature_id,
        source=source, subscription_id=None, usage_anchor=usage_anchor or at, time_zone=time_zone,
        active_from=active_from or at, active_to=None, created_at=at, updated_at=at, **values,
    )


async def _added(
    session: AsyncSession,
    row: CustomerEntitlement,
    action: str,
    before: dict[str, Any] | None,
    customer_key: str,
    feature: Feature,
    *,
    actor: str,
    at: datetime,
) -> EntitlementView:
    session.add(row)
    await flush_unique(session, Conflict(provisioning.RACED))
    await provisioning.reprovision(session, row.tenant_id, row.customer_id, actor=actor, at=at)
    await audit.record(
        session, row.tenant_id, actor=actor, action=action, entity_type="customer_entitlement",
        entity_id=row.id, before=before, after=audit.snapshot(row), at=at,
    )
    return EntitlementView(row, customer_key, feature.key)
