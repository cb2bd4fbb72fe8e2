"""The audit log: who changed what and when, with the entity before and after.

Every admin change in the catalogue and in provisioning writes a row in the same transaction
as the change itself, so the log never disagrees with the data.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Base
from allotment.entitlements.models import AuditEntry
from allotment.types import new_id

SYSTEM = "system"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        # Exact: integral quantities as integers, others as decimal strings.
        return int(value) if value == value.to_integral_value() else str(value)
    return value


def snapshot(row: Base | None) -> dict[str, Any] | None:
    """A row's columns as JSON (by column name), without the tenant it belongs to."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for attr in inspect(row).mapper.column_attrs:
        name = attr.columns[0].name
        if name != "tenant_id":
            out[name] = _jsonable(getattr(row, attr.key))
    return out


async def record(
    session: AsyncSession,
    tenant_id: str,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
) -> AuditEntry:
    entry = AuditEntry(
        id=new_id("aud"), tenant_id=tenant_id, actor=actor, action=action,
        entity_type=entity_type, entity_id=entity_id, before=before, after=after, at=at,
    )
    session.add(entry)
    return entry


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Oldest first, by id (ids are time-sortable)."""
    stmt = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if entity_type is not None:
        stmt = stmt.where(AuditEntry.entity_type == entity_type)
    if entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == entity_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if after:
        stmt = stmt.where(AuditEntry.id > after)
    return list(await session.scalars(stmt.order_by(AuditEntry.id).limit(limit)))
