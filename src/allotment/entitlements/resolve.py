"""Which entitlement row answers a check: (customer key, feature key) -> the row in force.

Checks run on every request of a vendor's customers, so resolving the names must not cost
three ORM queries each time. Each process remembers what a name pair resolved to and proves
it is still true with one indexed read on primary keys before using it. Resolving a pair the
process does not know yet (every pair after a restart) is itself one statement, read
without the ORM: as three ORM queries in a transaction it cost 4-6 ms, the first check of
every customer in every process.

Why one read is enough: an entitlement row's values never change after it is written — any
change (plan change, override, cancel, scheduled end) ends the row by setting `active_to`,
and a new row takes over. So a remembered row is still the answer when it still exists with
the same `active_to`, is in force at `at`, and its customer and feature are still what the
names mean (`queries.NAMES_HELD_FEATURE`). Nothing is remembered for a pair without a row in
force (`not_entitled`): the next check looks again, so a new entitlement counts at once, in any
process.

A feature key names, for a customer, the feature it holds: archiving a feature frees its key,
but whoever holds the archived feature keeps it, under its key, even once a new feature takes
the key (`queries.FEATURE_NAMED`). Every path that takes a customer's feature key resolves it
this way: checks here, the other paths through `features.held_by`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database, UTCDateTime, fetch
from allotment.entitlements import queries
from allotment.entitlements.models import CustomerEntitlement, Quantity
from allotment.errors import NotFound

_CAPACITY = 100_000  # remembered pairs per process; the whole map is dropped when full


@dataclass(frozen=True)
class Target:
    """The customer and feature a check names, and the entitlement row in force (or None)."""

    customer_id: str
    feature_id: str
    row: CustomerEntitlement | None


_remembered: dict[tuple[str, str, str], Target] = {}


Read = Callable[..., Awaitable[list[Any]]]  # (PostgreSQL text, SQLite text, *args) -> rows


async def target(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, at: datetime
) -> Target:
    """Resolve keys (or ids) to the row in force at `at`; unknown names raise NotFound.

    The returned row is detached and shared between requests: read it, never change it.
    """
    known = _remembered.get((tenant_id, customer, feature))
    if known is not None and await _still_true(session, tenant_id, customer, feature, known, at):
        return known

    async def read(sql_pg: str, sql_sqlite: str, *args: Any) -> list[Any]:
        return await fetch(session, sql_pg, sql_sqlite, *args)

    sqlite = session.get_bind().dialect.name == "sqlite"
    return await _look_up(read, sqlite, tenant_id, customer, feature, at)


async def target_outside(db: Database, tenant_id: str, customer: str, feature: str, at: datetime) -> Target:
    """`target` for names this process has not resolved yet, read outside any transaction."""
    return await _look_up(db.point_read, db.is_sqlite, tenant_id, customer, feature, at)


async def _look_up(
    read: Read, sqlite: bool, tenant_id: str, customer: str, feature: str, at: datetime
) -> Target:
    stamp = queries.sqlite_time(at) if sqlite else at
    rows = await read(_LOOK_UP_PG, _LOOK_UP_SQLITE, tenant_id, customer, feature, stamp)
    customer_id, feature_id, *columns = rows[0]
    if customer_id is None:
        raise NotFound("customer", customer)
    if feature_id is None:
        raise NotFound("feature", feature)
    found = Target(customer_id, feature_id, None if columns[0] is None else _entity(columns))
    name = (tenant_id, customer, feature)
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


# The customer by its key, else by its id (COALESCE reads the second only when the first found
# nothing: a key wins over another row's equal id), once (MATERIALIZED); then the feature the
# name means for that customer (`queries.FEATURE_NAMED`: an archived feature it holds under a key
# taken again stays its own); then the row in force by the (customer, feature, active_from) index,
# the pair given as values (with a join on k's columns, a planner without statistics scanned
# every row of the tenant). Each part is an index look-up, whatever the tables' statistics say.
_COLUMNS = tuple(column.name for column in CustomerEntitlement.__table__.columns)
_LOOK_UP = (
    "WITH c AS MATERIALIZED (SELECT"
    " COALESCE((SELECT id FROM customers WHERE tenant_id = {tenant} AND key = {customer} AND deleted_at IS NULL),"
    " (SELECT id FROM customers WHERE id = {customer} AND tenant_id = {tenant} AND deleted_at IS NULL))"
    " AS customer_id),"
    " k AS MATERIALIZED (SELECT c.customer_id, "
    + queries.FEATURE_NAMED.replace("{customer_id}", "c.customer_id") + " AS feature_id FROM c)"
    " SELECT k.customer_id, k.feature_id, " + ", ".join(f"e.{name}" for name in _COLUMNS) +
    " FROM k LEFT JOIN customer_entitlements e ON e.tenant_id = {tenant}"
    " AND e.customer_id = (SELECT customer_id FROM k) AND e.feature_id = (SELECT feature_id FROM k)"
    " AND e.active_from <= {at}"
    " AND (e.active_to IS NULL OR e.active_to > {at})"
)
_LOOK_UP_PG = _LOOK_UP.format(tenant="$1", customer="$2", feature="$3", at="$4")
_LOOK_UP_SQLITE = _LOOK_UP.format(tenant="?1", customer="?2", feature="?3", at="?4")


utc = queries.utc


def _column_reader(column: Any) -> Callable[[Any], Any]:
    """How a raw driver value of `column` becomes what the ORM would load (both drivers)."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return utc
    if isinstance(kind, Quantity):
        return lambda value: kind.process_result_value(value, None)  # type: ignore[arg-type]
    if isinstance(kind, JSON):  # neither raw driver decodes JSON
        return lambda value: orjson.loads(value) if isinstance(value, str | bytes) else value
    if isinstance(kind, Boolean):  # SQLite answers 0 or 1
        return lambda value: None if value is None else bool(value)
    return lambda value: value


_READERS = tuple(_column_reader(column) for column in CustomerEntitlement.__table__.columns)
# The entity's attribute of each column: `metadata` is `metadata_` (Base reserves the name).
_ATTRIBUTES = tuple(
    CustomerEntitlement.__mapper__.get_property_by_column(column).key for column in CustomerEntitlement.__table__.columns
)


def _entity(values: list[Any]) -> CustomerEntitlement:
    """A row read without the ORM as the detached entity the ORM would have loaded."""
    return CustomerEntitlement(**{name: read(value) for name, read, value in zip(_ATTRIBUTES, _READERS, values)})


async def _still_true(
    session: AsyncSession, tenant_id: str, customer: str, feature: str, known: Target, at: datetime
) -> bool:
    row = known.row
    assert row is not None  # only pairs with a row are remembered
    if row.active_from > at or (row.active_to is not None and row.active_to <= at):
        return False
    sqlite = session.get_bind().dialect.name == "sqlite"
    found = await fetch(session, _STILL_TRUE_PG, _STILL_TRUE_SQLITE, row.id, tenant_id, customer, feature,
                        queries.sqlite_time(at) if sqlite else at)
    return bool(found) and utc(found[0][0]) == row.active_to


_STILL_TRUE = (
    "SELECT e.active_to FROM customer_entitlements e"
    " JOIN customers c ON c.id = e.customer_id JOIN features f ON f.id = e.feature_id"
    " WHERE e.id = {id} AND e.tenant_id = {tenant}"
    " AND c.deleted_at IS NULL AND (c.key = {customer} OR c.id = {customer})"
    " AND (f.key = {feature} OR f.id = {feature}) AND " + queries.NAMES_HELD_FEATURE
)
_STILL_TRUE_PG = _STILL_TRUE.format(id="$1", tenant="$2", customer="$3", feature="$4", since="$5")
_STILL_TRUE_SQLITE = _STILL_TRUE.format(id="?1", tenant="?2", customer="?3", feature="?4", since="?5")
