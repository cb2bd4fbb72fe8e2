"""Which entitlement row answers a check: (customer key, feature key) -> the row in force.

Checks run on every request of a vendor's customers, so resolving the names must not cost
three ORM queries each time. Each process remembers what a name pair resolved to and proves
it is still true with one indexed read on primary keys before using it.

Why one read is enough: an entitlement row's values never change after it is written — any
change (plan change, override, cancel, scheduled end) ends the row by setting `active_to`,
and a new row takes over. So a remembered row is still the answer when it still exists with
the same `active_to`, is in force at `at`, and its customer and feature are still live under
the same keys. Nothing is remembered for a pair without a row in force (`not_entitled`): the
next check looks again, so a new entitlement counts at once, in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstanceState

from allotment.customers import service as customers
from allotment.db import fetch
from allotment.entitlements import features
from allotment.entitlements.models import CustomerEntitlement

_CAPACITY = 100_000  # remembered pairs per process; the whole map is dropped when full


@dataclass(frozen=True)
class Target:
    """The customer and feature a check names, and the entitlement row in force (or None)."""

    customer_id: str
    feature_id: str
    row: CustomerEntitlement | None


_remembered: dict[tuple[str, str, str], Target] = {}


async def target(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, at: datetime
) -> Target:
    """Resolve keys (or ids) to the row in force at `at`; unknown names raise NotFound.

    The returned row is detached and shared between requests: read it, never change it.
    """
    name = (tenant_id, customer, feature)
    known = _remembered.get(name)
    if known is not None and await _still_true(session, tenant_id, customer, feature, known, at):
        return known
    found = await _look_up(session, tenant_id, customer, feature, at)
    if found.row is not None:
        if len(_remembered) >= _CAPACITY:
            _remembered.clear()
        _remembered[name] = found
    else:
        _remembered.pop(name, None)
    return found


def remembered(tenant_id: str, customer: str, feature: str) -> Target | None:
    """What this process last resolved the names to, unproven (the caller must prove it)."""
    return _remembered.get((tenant_id, customer, feature))


async def _look_up(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, at: datetime
) -> Target:
    from allotment.entitlements.check import live_entitlement  # check imports this module

    customer_id = (await customers.find(session, tenant_id, customer)).id
    feature_id = (await features.get(session, tenant_id, feature)).id
    row = await live_entitlement(session, tenant_id, customer_id, feature_id, at)
    return Target(customer_id, feature_id, None if row is None else _detached_copy(row))


async def _still_true(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, known: Target, at: datetime
) -> bool:
    row = known.row
    assert row is not None  # only pairs with a row are remembered
    if row.active_from > at or (row.active_to is not None and row.active_to <= at):
        return False
    found = await fetch(
        session,
        "SELECT e.active_to FROM customer_entitlements e"
        " JOIN customers c ON c.id = e.customer_id JOIN features f ON f.id = e.feature_id"
        " WHERE e.id = $1 AND e.tenant_id = $2"
        " AND c.deleted_at IS NULL AND (c.key = $3 OR c.id = $3)"
        " AND f.archived_at IS NULL AND (f.key = $4 OR f.id = $4)",
        "SELECT e.active_to FROM customer_entitlements e"
        " JOIN customers c ON c.id = e.customer_id JOIN features f ON f.id = e.feature_id"
        " WHERE e.id = ?1 AND e.tenant_id = ?2"
        " AND c.deleted_at IS NULL AND (c.key = ?3 OR c.id = ?3)"
        " AND f.archived_at IS NULL AND (f.key = ?4 OR f.id = ?4)",
        row.id, tenant_id, customer, feature,
    )
    return bool(found) and utc(found[0][0]) == row.active_to


def utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as the drivers return it (SQLite: naive UTC text) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _detached_copy(row: CustomerEntitlement) -> CustomerEntitlement:
    """A copy that belongs to no session, so it can outlive the one that loaded it."""
    state: InstanceState[CustomerEntitlement] = inspect(row)
    columns = {attr.key: getattr(row, attr.key) for attr in state.mapper.column_attrs}
    return CustomerEntitlement(**columns)

