"""Features: what a customer may be entitled to, optionally measured by a meter."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import flush_unique
from allotment.entitlements import audit, queries
from allotment.entitlements.models import Feature
from allotment.entitlements.schemas import FeatureCreate, FeatureUpdate
from allotment.errors import AlreadyExists, NotFound, ValidationFailed
from allotment.metering import meters
from allotment.metering.aggregation import Aggregation
from allotment.types import new_id

# The meters whose values add up to a running total: only these can feed a feature's usage
# counters (a MAX, LATEST or UNIQUE_COUNT of a period is not the sum of its events).
ADDITIVE = (Aggregation.SUM, Aggregation.COUNT)


@dataclass
class FeatureView:
    feature: Feature
    meter_key: str | None


async def _live(session: AsyncSession, tenant_id: str, key: str, *, archived: bool = False) -> Feature | None:
    stmt = select(Feature).where(Feature.tenant_id == tenant_id, (Feature.key == key) | (Feature.id == key))
    if archived:  # a key archived and taken again: the live feature, else the latest archived
        stmt = stmt.order_by(Feature.archived_at.is_not(None), Feature.archived_at.desc()).limit(1)
    else:
        stmt = stmt.where(Feature.archived_at.is_(None))
    found: Feature | None = await session.scalar(stmt)
    return found


async def get(session: AsyncSession, tenant_id: str, key: str, *, archived: bool = False) -> Feature:
    """A live feature by key or id (with `archived`, an archived one too, the latest, when no live
    one has the key). For a customer's feature, `held_by` says which one it holds."""
    feature = await _live(session, tenant_id, key, archived=archived)
    if feature is None:
        raise NotFound("feature", key)
    return feature


async def held_by(session: AsyncSession, tenant_id: str, key: str, *, customer_id: str, at: datetime) -> Feature:
    """The feature `key` (or an id) names for a customer at `at`: the one it holds.

    Archiving frees a key, and whoever holds the archived feature keeps it: for them the key
    still names it even once a new feature takes the key, unless they hold the new one too.
    Anyone else gets the live feature (`queries.FEATURE_NAMED`, as checks resolve it).
    """
    found = await queries.feature_named(session, tenant_id, customer_id, key, at)
    feature = None if found is None else await session.get(Feature, found)
    if feature is None:
        raise NotFound("feature", key)
    return feature


async def by_keys(session: AsyncSession, tenant_id: str, keys: Iterable[str]) -> dict[str, Feature]:
    """Live features by key; the first unknown key is a 404 naming it."""
    wanted = list(dict.fromkeys(keys))
    rows = await session.scalars(
        select(Feature).where(
            Feature.tenant_id == tenant_id, Feature.key.in_(wanted), Feature.archived_at.is_(None)
        )
    )
    found = {f.key: f for f in rows}
    for key in wanted:
        if key not in found:
            raise NotFound("feature", key)
    return found


async def keys_of(session: AsyncSession, tenant_id: str, ids: Iterable[str]) -> dict[str, str]:
    """feature id -> key, archived features included (old plans may still name them)."""
    rows = await session.execute(
        select(Feature.id, Feature.key).where(Feature.tenant_id == tenant_id, Feature.id.in_(set(ids)))
    )
    return {feature_id: key for feature_id, key in rows}


async def view(session: AsyncSession, tenant_id: str, feature: Feature) -> FeatureView:
    if feature.meter_id is None:
        return FeatureView(feature, None)
    try:
        meter = await meters.get(session, tenant_id, feature.meter_id)
    except NotFound:
        return FeatureView(feature, None)  # its meter was deleted since
    return FeatureView(feature, meter.key)


async def _resolve_meter(
    session: AsyncSession, tenant_id: str, meter_key: str | None, group_filter: dict[str, str],
    *, any_meter: bool = False,
) -> str | None:
    """The meter's id; the meter must add its events up, and the group filter must name
    groups the meter actually has."""
    if meter_key is None:
        if group_filter:
            raise ValidationFailed.on("meter_group_filter", "needs a meter")
        return None
    meter = await meters.get(session, tenant_id, meter_key)
    if not any_meter and Aggregation(meter.aggregation) not in ADDITIVE:
        raise ValidationFailed.on("meter", (
            f"meter '{meter.key}' aggregates with {meter.aggregation}, which adds up to no usage: "
            "a feature can be measured by a SUM or COUNT meter only"))
    for name in group_filter:
        if name not in meter.group_by:
            raise ValidationFailed.on(
                f"meter_group_filter.{name}", f"meter '{meter.key}' has no group '{name}'"
            )
    return meter.id


async def create(
    session: AsyncSession, tenant_id: str, data: FeatureCreate, *, actor: str, at: datetime,
    any_meter: bool = False,
) -> FeatureView:
    """A new feature; `any_meter` lets it be measured by a meter that adds nothing up (a
    plan another billing system defines charges its metrics whatever their aggregation)."""
    if await _live(session, tenant_id, data.key) is not None:
        raise AlreadyExists("feature", data.key)
    meter_id = await _resolve_meter(session, tenant_id, data.meter, data.meter_group_filter, any_meter=any_meter)
    feature = Feature(
        id=new_id("fea"), tenant_id=tenant_id, key=data.key, name=data.name or data.key,
        unit=data.unit, meter_id=meter_id, meter_group_filter=data.meter_group_filter,
        metadata_=data.metadata, created_at=at, updated_at=at,
    )
    session.add(feature)
    await flush_unique(session, AlreadyExists("feature", data.key))
    await audit.record(
        session, tenant_id, actor=actor, action="feature.created", entity_type="feature",
        entity_id=feature.id, before=None, after=audit.snapshot(feature), at=at,
    )
    return await view(session, tenant_id, feature)


async def update(
    session: AsyncSession, tenant_id: str, key: str, data: FeatureUpdate, *, actor: str, at: datetime
) -> FeatureView:
    feature = await get(session, tenant_id, key)
    before = audit.snapshot(feature)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        feature.name = changes["name"]
    if "unit" in changes:
        feature.unit = changes["unit"]
    if changes.get("metadata") is not None:
        feature.metadata_ = changes["metadata"]
    if "meter" in changes or changes.get("meter_group_filter") is not None:
        await _relink(session, tenant_id, feature, changes)
    feature.updated_at = at
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="feature.updated", entity_type="feature",
        entity_id=feature.id, before=before, after=audit.snapshot(feature), at=at,
    )
    return await view(session, tenant_id, feature)


async def _relink(
    session: AsyncSession, tenant_id: str, feature: Feature, changes: dict[str, object]
) -> None:
    current = (await view(session, tenant_id, feature)).meter_key
    meter_key = changes.get("meter", current)
    group_filter = changes.get("meter_group_filter")
    if not isinstance(group_filter, dict):
        group_filter = feature.meter_group_filter if meter_key == current else {}
    assert meter_key is None or isinstance(meter_key, str)
    feature.meter_id = await _resolve_meter(session, tenant_id, meter_key, group_filter)
    feature.meter_group_filter = group_filter


async def archive(session: AsyncSession, tenant_id: str, key: str, *, actor: str, at: datetime) -> None:
    """Archived features stay on the plans and entitlements that have them; new plans cannot."""
    feature = await get(session, tenant_id, key)
    before = audit.snapshot(feature)
    feature.archived_at = at
    feature.updated_at = at
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="feature.archived", entity_type="feature",
        entity_id=feature.id, before=before, after=audit.snapshot(feature), at=at,
    )


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    after: str | None,
    limit: int,
    include_archived: bool = False,
) -> list[FeatureView]:
    stmt = select(Feature).where(Feature.tenant_id == tenant_id)
    if not include_archived:
        stmt = stmt.where(Feature.archived_at.is_(None))
    if after:
        stmt = stmt.where(Feature.id > after)
    rows = list(await session.scalars(stmt.order_by(Feature.id).limit(limit)))
    return [await view(session, tenant_id, f) for f in rows]
