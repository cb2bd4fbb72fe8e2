"""Meters: definitions, and (re)building their rollups from the event log.

Every change to a tenant's meters is stamped after the tenant's last one (`_stamped`), so the
catalogue version that ingest re-checks in its transaction changes with each of them, whatever
the clocks of the processes making them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.db import fetch
from allotment.entitlements import audit
from allotment.errors import AlreadyExists, NotFound, ValidationFailed
from allotment.metering import queries
from allotment.metering.aggregation import CompiledMeter, DataError
from allotment.metering.jsonpath import InvalidPath, compile_path
from allotment.metering.models import Meter
from allotment.metering.rollup import ALL_WIDTHS, Fold, journal_without
from allotment.metering.schemas import MeterCreate, MeterUpdate
from allotment.types import new_id, to_micros

_BACKFILL_CHUNK = 5000
_compiled: dict[tuple[str, datetime], CompiledMeter] = {}


def compile_meter(meter: Meter) -> CompiledMeter:
    """Compiled once per meter version and kept for the process (meters change rarely)."""
    cache_key = (meter.id, meter.updated_at)
    compiled = _compiled.get(cache_key)
    if compiled is None:
        compiled = CompiledMeter.build(
            id=meter.id,
            key=meter.key,
            event_type=meter.event_type,
            aggregation=meter.aggregation,
            value_property=meter.value_property,
            group_by=meter.group_by,
            filters=meter.filters,
            event_from_us=None if meter.event_from is None else to_micros(meter.event_from),
        )
        _compiled[cache_key] = compiled
    return compiled


CatalogueVersion = tuple[int, int]  # live meters, latest change (us)


@dataclass(frozen=True)
class Catalogue:
    """A tenant's live meters by event type, at one version."""

    version: CatalogueVersion
    by_type: dict[str, list[CompiledMeter]]


_catalogues: dict[str, Catalogue] = {}


def cached_catalogue(tenant_id: str) -> Catalogue | None:
    """The last catalogue this process loaded (ingest re-checks its version in the transaction)."""
    return _catalogues.get(tenant_id)


async def catalogue_version(session: AsyncSession, tenant_id: str) -> CatalogueVersion:
    """Changes whenever a meter is created, changed or retired (each bumps `updated_at`)."""
    rows = await fetch(
        session,
        "SELECT COUNT(*) FILTER (WHERE deleted_at IS NULL), MAX(updated_at) FROM meters WHERE tenant_id = $1",
        "SELECT COUNT(*) FILTER (WHERE deleted_at IS NULL), MAX(updated_at) FROM meters WHERE tenant_id = ?",
        tenant_id,
    )
    count, latest = rows[0]
    return int(count or 0), _stamp(latest)


def _stamp(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):  # SQLite hands the stored text back on the driver connection
        value = datetime.fromisoformat(value)
    return int(value.timestamp() * 1_000_000) if value.tzinfo else int(value.replace(tzinfo=UTC).timestamp() * 1_000_000)


async def load_catalogue(session: AsyncSession, tenant_id: str, version: CatalogueVersion) -> Catalogue:
    catalogue = Catalogue(version, await compiled_by_type(session, tenant_id))
    _catalogues[tenant_id] = catalogue
    return catalogue


async def compiled_by_type(session: AsyncSession, tenant_id: str) -> dict[str, list[CompiledMeter]]:
    rows = await session.scalars(
        select(Meter).where(Meter.tenant_id == tenant_id, Meter.deleted_at.is_(None))
    )
    out: dict[str, list[CompiledMeter]] = {}
    for meter in rows:
        out.setdefault(meter.event_type, []).append(compile_meter(meter))
    return out


def _validate_paths(data: MeterCreate) -> None:
    if data.aggregation.needs_value and not data.value_property:
        raise ValidationFailed.on("value_property", f"is required for {data.aggregation.value}")
    if not data.aggregation.needs_value and data.value_property:
        raise ValidationFailed.on("value_property", "must be empty for COUNT")
    paths: list[tuple[str, str]] = []
    if data.value_property:
        paths.append(("value_property", data.value_property))
    paths += _group_paths(data.group_by)
    paths += [(f"filters[{i}].property", f.property) for i, f in enumerate(data.filters)]
    _check_paths(paths)


def _group_paths(group_by: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"group_by.{name}", path) for name, path in group_by.items()]


def _check_paths(paths: list[tuple[str, str]]) -> None:
    for field_name, path in paths:
        try:
            compile_path(path)
        except InvalidPath as exc:
            raise ValidationFailed.on(field_name, str(exc)) from None


async def create(
    session: AsyncSession, tenant_id: str, data: MeterCreate, *, at: datetime, actor: str = audit.SYSTEM
) -> tuple[Meter, int]:
    """Create a meter and count the events already stored; returns the meter and that count."""
    _validate_paths(data)
    await queries.lock_tenant_exclusive(session, tenant_id)
    if await _find(session, tenant_id, data.key) is not None:
        raise AlreadyExists("meter", data.key)
    stamp = await _stamped(session, tenant_id, at)
    meter = Meter(
        id=new_id("mtr"),
        tenant_id=tenant_id,
        key=data.key,
        name=data.name or data.key,
        description=data.description,
        event_type=data.event_type,
        aggregation=data.aggregation.value,
        value_property=data.value_property,
        group_by=dict(data.group_by),
        filters=[f.model_dump() for f in data.filters],
        event_from=data.event_from,
        metadata_=data.metadata,
        created_at=at,
        updated_at=stamp,
    )
    session.add(meter)
    try:
        await session.flush()
    except IntegrityError:
        raise AlreadyExists("meter", data.key) from None
    counted = await backfill(session, tenant_id, compile_meter(meter))
    await _audit(session, meter, "meter.created", None, actor=actor, at=at)
    return meter, counted


async def backfill(session: AsyncSession, tenant_id: str, meter: CompiledMeter) -> int:
    """Fold every stored event of the meter's type into its rollups; returns events counted.

    Runs under the tenant's exclusive ingest lock (or SQLite's single writer), so no event is
    both backfilled and folded by a concurrent ingest.
    """
    after, counted = -1, 0
    while True:
        rows = await fetch(
            session,
            "SELECT seq, subject, time_us, data FROM events WHERE tenant_id = $1 AND type = $2"
            " AND seq > $3 ORDER BY seq LIMIT $4",
            "SELECT seq, subject, time_us, data FROM events WHERE tenant_id = ? AND type = ?"
            " AND seq > ? ORDER BY seq LIMIT ?",
            tenant_id,
            meter.event_type,
            after,
            _BACKFILL_CHUNK,
        )
        if not rows:
            return counted
        fold = Fold(widths=ALL_WIDTHS)
        for seq, subject, time_us, data in rows:
            after = seq
            try:
                contribution = meter.contribution(_loads(data), time_us)
            except DataError:
                continue  # this event cannot feed this meter; GET /v1/events shows why
            if contribution is not None:
                fold.add(meter.id, subject, time_us, contribution)
                counted += 1
        await queries.upsert_rollups(session, tenant_id, fold.rollup_rows())
        await queries.insert_distinct(session, tenant_id, fold.distinct)


def _loads(data: str | None) -> dict[str, Any]:
    return codec.loads(data) if data else {}


async def _find(session: AsyncSession, tenant_id: str, key: str) -> Meter | None:
    meter: Meter | None = await session.scalar(
        select(Meter).where(
            Meter.tenant_id == tenant_id,
            (Meter.key == key) | (Meter.id == key),
            Meter.deleted_at.is_(None),
        )
    )
    return meter


async def get(session: AsyncSession, tenant_id: str, key: str) -> Meter:
    meter = await _find(session, tenant_id, key)
    if meter is None:
        raise NotFound("meter", key)
    return meter


async def list_(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int, include_deleted: bool = False
) -> list[Meter]:
    """Live meters in id order; with `include_deleted`, deleted ones too."""
    stmt = select(Meter).where(Meter.tenant_id == tenant_id)
    if not include_deleted:
        stmt = stmt.where(Meter.deleted_at.is_(None))
    if after:
        stmt = stmt.where(Meter.id > after)
    return list(await session.scalars(stmt.order_by(Meter.id).limit(limit)))


async def update(
    session: AsyncSession, tenant_id: str, key: str, data: MeterUpdate, *, at: datetime, actor: str = audit.SYSTEM
) -> Meter:
    """Rename or describe a meter, replace its metadata, or change its group-by (which
    regroups its whole history).

    The caller refuses first a group-by change that would drop or change a group a live
    feature filters on (entitlements/references.py): its live counters were counted by it.
    """
    changes = data.model_dump(exclude_unset=True)
    group_by = data.group_by
    if group_by is not None:
        _check_paths(_group_paths(group_by))
        # Taken before the meter is read, so two changes of one meter apply one after the other.
        await queries.lock_tenant_exclusive(session, tenant_id)
    meter = await get(session, tenant_id, key)
    if group_by is not None:
        await session.refresh(meter)  # as the lock left it, not as this session first read it
        if meter.deleted_at is not None:
            raise NotFound("meter", key)
    before = audit.snapshot(meter)
    regroup = False
    if group_by is not None and group_by != meter.group_by:  # the same group-by: nothing to rebuild
        meter.group_by, regroup = dict(group_by), True
    if "name" in changes and changes["name"] is not None:
        meter.name = changes["name"]
    if "description" in changes:
        meter.description = changes["description"]
    if data.metadata is not None:
        meter.metadata_ = data.metadata
    meter.updated_at = await _stamped(session, tenant_id, at)
    await session.flush()
    if regroup:
        await regroup_history(session, tenant_id, meter)
    await _audit(session, meter, "meter.updated", before, actor=actor, at=at)
    return meter


async def regroup_history(session: AsyncSession, tenant_id: str, meter: Meter) -> int:
    """Rebuild the meter's rollups (and distinct values) under its group-by, from the event log;
    returns the events counted.

    The caller holds the tenant's ingest lock exclusively, so no ingest is in flight and every
    stored event is in the log. Journal rows not yet folded hold the meter's cells under its old
    groups and their events are in the log as well: the cells are taken out of the rows, which
    are locked first, so a fold that claimed some of them has finished (and its rollups are
    deleted below) and no fold can take them meanwhile. Queries then see the old rollups and
    journal, or the rebuilt ones, never a mix.
    """
    changed = []
    for seq, payload in await queries.lock_tenant_journal(session, tenant_id):
        kept = journal_without(payload, meter.id)
        if kept is not None:
            changed.append((seq, kept))
    await queries.delete_journal(session, [seq for seq, kept in changed if not kept])
    await queries.rewrite_journal(session, [(seq, kept) for seq, kept in changed if kept])
    await queries.delete_rollups(session, tenant_id, meter.id)
    return await backfill(session, tenant_id, compile_meter(meter))


async def _stamped(session: AsyncSession, tenant_id: str, at: datetime) -> datetime:
    """`at`, or just after the tenant's latest meter change when that is not before `at`.

    The catalogue version is the live count and the latest `updated_at`: a change stamped no
    later than the last one (a process whose clock is behind) could leave both as they were,
    and ingest would go on using the meters as they were before it.
    """
    latest = await session.scalar(select(func.max(Meter.updated_at)).where(Meter.tenant_id == tenant_id))
    if latest is not None and latest >= at:
        return latest + timedelta(microseconds=1)
    return at


async def delete(
    session: AsyncSession, tenant_id: str, key: str, *, at: datetime, actor: str = audit.SYSTEM
) -> None:
    """Retire a meter. Its rollups are dropped; the events stay (a new meter can count them)."""
    meter = await get(session, tenant_id, key)
    before = audit.snapshot(meter)
    await queries.lock_tenant_exclusive(session, tenant_id)
    meter.deleted_at = at
    meter.updated_at = await _stamped(session, tenant_id, at)
    await queries.delete_rollups(session, tenant_id, meter.id)
    await session.flush()
    await _audit(session, meter, "meter.deleted", before, actor=actor, at=at)


async def _audit(session: AsyncSession, meter: Meter, action: str, before: dict[str, Any] | None, *,
                 actor: str, at: datetime) -> None:
    after = None if meter.deleted_at is not None else audit.snapshot(meter)
    await audit.record(session, meter.tenant_id, actor=actor, action=action, entity_type="meter",
                       entity_id=meter.id, before=before, after=after, at=at)
