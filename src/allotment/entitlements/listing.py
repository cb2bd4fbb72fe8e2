"""Tenant-wide lists of entitlement rows and grants, filtered, ordered and paged in the database.

For administrative views across customers (OpenMeter's `/entitlements` and `/grants`); one
customer's rows and grants are read with `provisioning.rows_of` and `grants.list_`. A filter
given as an empty collection matches nothing (the names it was built from were all unknown);
None does not filter.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement, GrantRecord
from allotment.errors import NotFound

T = TypeVar("T")
EntitlementOrder = Literal["created_at", "updated_at"]
GrantOrder = Literal["id", "created_at", "updated_at"]


@dataclass(frozen=True)
class Page(Generic[T]):
    total: int  # every match, not only this page
    items: list[T]


async def entitlement(session: AsyncSession, tenant_id: str, entitlement_id: str) -> CustomerEntitlement:
    """One row by id, ended or not; another tenant's is a 404 like an unknown one. The id of an
    entitlement reset by hand names its latest row (usage_resets.py)."""
    found = await session.get(CustomerEntitlement, entitlement_id)
    if found is None or found.tenant_id != tenant_id:
        raise NotFound("entitlement", entitlement_id)
    latest: CustomerEntitlement | None = await session.scalar(
        select(CustomerEntitlement)
        .where(CustomerEntitlement.tenant_id == tenant_id, CustomerEntitlement.origin_id == found.public_id)
        .order_by(CustomerEntitlement.active_from.desc()).limit(1)
    )
    return found if latest is None else latest


async def entitlements(
    session: AsyncSession,
    tenant_id: str,
    *,
    at: datetime,
    customer_ids: Collection[str] | None = None,
    feature_ids: Collection[str] | None = None,
    kinds: Collection[Kind] | None = None,
    ended: bool = False,
    scheduled: bool = True,
    order_by: EntitlementOrder = "created_at",
    descending: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> Page[CustomerEntitlement]:
    """Rows not ended by `at` (all with `ended`), those starting later too unless not `scheduled`."""
    e = CustomerEntitlement
    where: list[ColumnElement[bool]] = [e.tenant_id == tenant_id]
    if customer_ids is not None:
        where.append(e.customer_id.in_(sorted(customer_ids)))
    if feature_ids is not None:
        where.append(e.feature_id.in_(sorted(feature_ids)))
    if kinds is not None:
        where.append(e.kind.in_(sorted(k.value for k in kinds)))
    if not ended:
        where.append(or_(e.active_to.is_(None), e.active_to > at))
    if not scheduled:
        where.append(e.active_from <= at)
    column = e.updated_at if order_by == "updated_at" else e.created_at
    order = (column.desc(), e.id.desc()) if descending else (column, e.id)
    return await _page(session, select(e).where(*where).order_by(*order), offset, limit)


async def grants(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer_ids: Collection[str] | None = None,
    feature_ids: Collection[str] | None = None,
    voided: bool = False,
    order_by: GrantOrder = "id",
    descending: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> Page[GrantRecord]:
    """Grants, voided ones too with `voided`; a grant was last updated when voided."""
    g = GrantRecord
    where: list[ColumnElement[bool]] = [g.tenant_id == tenant_id]
    if customer_ids is not None:
        where.append(g.customer_id.in_(sorted(customer_ids)))
    if feature_ids is not None:
        where.append(g.feature_id.in_(sorted(feature_ids)))
    if not voided:
        where.append(g.voided_at.is_(None))
    column = {
        "id": g.id, "created_at": g.created_at, "updated_at": func.coalesce(g.voided_at, g.created_at),
    }[order_by]  # fmt: skip
    order = (column.desc(), g.id.desc()) if descending else (column, g.id)
    return await _page(session, select(g).where(*where).order_by(*order), offset, limit)


async def _page(session: AsyncSession, stmt: Select[T], offset: int, limit: int) -> Page[T]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(await session.scalars(stmt.offset(offset).limit(limit)))
    return Page(int(total or 0), items)


async def entitlements_of_grants(
    session: AsyncSession, tenant_id: str, records: Collection[GrantRecord], *, at: datetime
) -> dict[str, str]:
    """grant id -> the entitlement it tops up: its customer's metered row on its feature in
    force at `at`, else the latest one (a grant belongs to the customer and feature, not a row)."""
    if not records:
        return {}
    e = CustomerEntitlement
    rows = await session.scalars(
        select(e)
        .where(
            e.tenant_id == tenant_id,
            e.customer_id.in_(sorted({r.customer_id for r in records})),
            e.feature_id.in_(sorted({r.feature_id for r in records})),
        )
        .order_by(e.active_from, e.id)
    )
    chosen: dict[tuple[str, str], CustomerEntitlement] = {}
    for row in rows:  # oldest first: a later row replaces an earlier one unless that one is live
        pair = (row.customer_id, row.feature_id)
        held = chosen.get(pair)
        if held is None or not _rank(held, at) > _rank(row, at):
            chosen[pair] = row
    out = {}
    for record in records:
        found = chosen.get((record.customer_id, record.feature_id))
        if found is not None:
            out[record.id] = found.public_id
    return out


def _rank(row: CustomerEntitlement, at: datetime) -> tuple[bool, bool]:
    """Metered before other kinds, and among them the one in force at `at` first."""
    live = row.active_from <= at and (row.active_to is None or row.active_to > at)
    return (row.kind == Kind.METERED, live)
