"""Plans: named, versioned packages of entitlements.

A published version never changes: editing a plan creates the next version as a draft, and
publishing it archives the version before. Subscriptions keep the version they were put on
until they are migrated, so publishing never changes what an existing customer has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import flush_unique
from allotment.entitlements import audit, features
from allotment.entitlements.models import Plan, PlanEntitlement
from allotment.entitlements.periods import Interval
from allotment.entitlements.schemas import PlanCreate
from allotment.entitlements.values import normalize
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import new_id

BILLING_PERIODS = {"week": Interval.WEEK, "month": Interval.MONTH, "year": Interval.YEAR}


def billing_period(plan: Plan) -> Interval:
    """How often the plan's subscriptions are billed, as a usage period steps."""
    return BILLING_PERIODS[plan.billing_interval]


@dataclass
class PlanView:
    plan: Plan
    entitlements: list[tuple[str, PlanEntitlement]]  # (feature key, row), by feature key


async def entitlements_of(session: AsyncSession, plan: Plan) -> list[PlanEntitlement]:
    return list(
        await session.scalars(select(PlanEntitlement).where(PlanEntitlement.plan_id == plan.id))
    )


async def view(session: AsyncSession, plan: Plan) -> PlanView:
    rows = await entitlements_of(session, plan)
    keys = await features.keys_of(session, plan.tenant_id, [r.feature_id for r in rows])
    return PlanView(plan, sorted(((keys[r.feature_id], r) for r in rows), key=lambda p: p[0]))


async def _versions(session: AsyncSession, tenant_id: str, key: str) -> list[Plan]:
    rows = await session.scalars(
        select(Plan).where(Plan.tenant_id == tenant_id, Plan.key == key).order_by(Plan.version)
    )
    return list(rows)


async def latest_published(session: AsyncSession, tenant_id: str, key: str) -> Plan:
    """The version new subscriptions get; a plan that was never published is a conflict."""
    versions = await _versions(session, tenant_id, key)
    if not versions:
        raise NotFound("plan", key)
    published = [p for p in versions if p.status == "published"]
    if not published:
        raise Conflict(f"plan '{key}' has no published version; publish it first")
    return published[-1]


async def get(session: AsyncSession, tenant_id: str, key: str, *, version: int | None = None) -> PlanView:
    """A given version, or the latest published one."""
    if version is None:
        versions = await _versions(session, tenant_id, key)
        published = [p for p in versions if p.status == "published"]
        if not published:
            raise NotFound("plan", key)
        return await view(session, published[-1])
    plan = await session.scalar(
        select(Plan).where(Plan.tenant_id == tenant_id, Plan.key == key, Plan.version == version)
    )
    if plan is None:
        raise NotFound("plan", f"{key}@v{version}")
    return await view(session, plan)


async def by_id(session: AsyncSession, tenant_id: str, plan_id: str) -> Plan:
    plan = await session.get(Plan, plan_id)
    if plan is None or plan.tenant_id != tenant_id:
        raise NotFound("plan", plan_id)
    return plan


async def create(
    session: AsyncSession, tenant_id: str, data: PlanCreate, *, actor: str, at: datetime,
    external_document: dict[str, Any] | None = None,
) -> PlanView:
    """Version 1 of a new key, or the next draft version of an existing one. `external_document`
    is the plan as another billing system defined it, kept with this version."""
    versions = await _versions(session, tenant_id, data.key)
    drafts = [p.version for p in versions if p.status == "draft"]
    if drafts:
        raise Conflict(f"plan '{data.key}' already has draft version {drafts[-1]}; publish it first")
    await _check_next_tier(session, tenant_id, data)
    plan = Plan(
        id=new_id("pln"), tenant_id=tenant_id, key=data.key,
        version=(versions[-1].version + 1) if versions else 1, name=data.name,
        description=data.description, billing_interval=data.billing_interval, currency=data.currency,
        next_tier=data.next_tier, status="draft", created_at=at, external_document=external_document,
    )
    session.add(plan)
    await flush_unique(session, Conflict(f"plan '{data.key}' version {plan.version} was just created"))
    await _add_entitlements(session, plan, data)
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="plan.created", entity_type="plan",
        entity_id=plan.id, before=None, after=await _snapshot(session, plan), at=at,
    )
    return await view(session, plan)


async def _check_next_tier(session: AsyncSession, tenant_id: str, data: PlanCreate) -> None:
    if data.next_tier is None:
        return
    if data.next_tier == data.key:
        raise ValidationFailed.on("next_tier", "must name another plan")
    exists = await session.scalar(
        select(func.count()).select_from(Plan).where(
            Plan.tenant_id == tenant_id, Plan.key == data.next_tier
        )
    )
    if not exists:
        raise NotFound("plan", data.next_tier)


async def _add_entitlements(session: AsyncSession, plan: Plan, data: PlanCreate) -> None:
    seen: set[str] = set()
    for index, item in enumerate(data.entitlements):
        if item.feature in seen:
            raise ValidationFailed.on(f"entitlements[{index}].feature", "appears more than once")
        seen.add(item.feature)
    found = await features.by_keys(session, plan.tenant_id, seen)
    for index, item in enumerate(data.entitlements):
        values = normalize(
            item.kind, item.model_dump(exclude={"feature", "kind"}), prefix=f"entitlements[{index}]."
        )
        session.add(
            PlanEntitlement(
                id=new_id("pen"), tenant_id=plan.tenant_id, plan_id=plan.id,
                feature_id=found[item.feature].id, **values,
            )
        )


async def publish(
    session: AsyncSession, tenant_id: str, key: str, *, actor: str, at: datetime
) -> PlanView:
    versions = await _versions(session, tenant_id, key)
    if not versions:
        raise NotFound("plan", key)
    drafts = [p for p in versions if p.status == "draft"]
    if not drafts:
        raise Conflict(f"plan '{key}' has no draft version to publish")
    for previous in versions:
        if previous.status == "published":
            before = audit.snapshot(previous)
            previous.status = "archived"
            await audit.record(
                session, tenant_id, actor=actor, action="plan.archived", entity_type="plan",
                entity_id=previous.id, before=before, after=audit.snapshot(previous), at=at,
            )
    plan = drafts[-1]
    before = audit.snapshot(plan)
    plan.status, plan.published_at = "published", at
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="plan.published", entity_type="plan",
        entity_id=plan.id, before=before, after=audit.snapshot(plan), at=at,
    )
    return await view(session, plan)


async def retire(session: AsyncSession, tenant_id: str, key: str, *, actor: str, at: datetime) -> list[Plan]:
    """Archives every version of the plan, drafts included: no new subscription can start on it.
    Subscriptions already on a version keep it (end them first to end their entitlements)."""
    versions = await _versions(session, tenant_id, key)
    if not versions:
        raise NotFound("plan", key)
    for plan in versions:
        if plan.status != "archived":
            before = audit.snapshot(plan)
            plan.status = "archived"
            await audit.record(
                session, tenant_id, actor=actor, action="plan.archived", entity_type="plan",
                entity_id=plan.id, before=before, after=audit.snapshot(plan), at=at,
            )
    await session.flush()
    return versions


async def published_page(session: AsyncSession, tenant_id: str, *, offset: int, limit: int) -> tuple[list[Plan], int]:
    """The published version of each plan, by key, and how many plans have one."""
    where = (Plan.tenant_id == tenant_id, Plan.status == "published")
    rows = await session.scalars(select(Plan).where(*where).order_by(Plan.key).offset(offset).limit(limit))
    total = await session.scalar(select(func.count()).select_from(Plan).where(*where))
    return list(rows), int(total or 0)


async def _snapshot(session: AsyncSession, plan: Plan) -> dict[str, object]:
    """The plan with its entitlements, as the audit log shows a new version."""
    out: dict[str, object] = dict(audit.snapshot(plan) or {})
    out["entitlements"] = [audit.snapshot(e) for e in await entitlements_of(session, plan)]
    return out


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    key: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[PlanView]:
    stmt = select(Plan).where(Plan.tenant_id == tenant_id)
    if key is not None:
        stmt = stmt.where(Plan.key == key)
    if status is not None:
        stmt = stmt.where(Plan.status == status)
    if after:
        stmt = stmt.where(Plan.id > after)
    rows = list(await session.scalars(stmt.order_by(Plan.id).limit(limit)))
    return [await view(session, p) for p in rows]
