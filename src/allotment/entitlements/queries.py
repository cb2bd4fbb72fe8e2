"""The check hot-path SQL on the driver connection, one function per statement.

Quantities are integer millionths. Consuming is one conditional upsert, so the database
compares and increments in one step on one row: concurrent consumers (any number of
processes) can never push `used + reserved` past the hard limit.

The statements that move `used` also return the counter's `carried` (0 when NULL): the overage
carried into the period is part of `used`, so a move from exactly `carried` is the period's
first usage (what tells of its reset), with no read of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database, driver, fetch, fetch_opening
from allotment.entitlements.models import (
    CustomerEntitlement,
    EntitlementUsage,
    GrantRecurrence,
    Reservation,
    SeatLease,
)
from allotment.packed import pack, rows_of

MILLION = 1_000_000
MAX_BIGINT = 2**63 - 1

# Usage as limits see it (engine._period_usage): events may correct a period's counter below
# zero, which stays exact for later events, but gives no room: every statement that consumes,
# holds or commits judges and adds from zero there.
_SEEN_PG, _SEEN_LITE = "GREATEST(u.used, 0)", "MAX(used, 0)"

Totals = tuple[int, int, int]  # a counter's used, reserved and carried (0: none), in millionths


def _add_within_limit_sql(column: str) -> tuple[str, str]:
    """One conditional upsert adding to `used` or `reserved`, refused past the hard limit."""
    values = "$4::int8, 0" if column == "used" else "0, $4::int8"
    base_pg, base_lite = (_SEEN_PG, _SEEN_LITE) if column == "used" else ("u.reserved", "reserved")
    pg = (
        "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved)"
        f" SELECT $1, $2, $3, {values} WHERE $4::int8 <= $5::int8"
        " ON CONFLICT (tenant_id, entitlement_id, period_start)"
        f" DO UPDATE SET {column} = {base_pg} + EXCLUDED.{column}"
        f" WHERE {_SEEN_PG} + u.reserved <= $5::int8 - EXCLUDED.{column}"
        " RETURNING used, reserved, COALESCE(carried, 0)"
    )
    lite_values = "?, 0" if column == "used" else "0, ?"
    lite = (
        "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
        f" SELECT ?, ?, ?, {lite_values} WHERE ? <= ?"
        " ON CONFLICT (tenant_id, entitlement_id, period_start)"
        f" DO UPDATE SET {column} = {base_lite} + excluded.{column}"
        f" WHERE {_SEEN_LITE} + reserved <= ? - excluded.{column}"
        " RETURNING used, reserved, COALESCE(carried, 0)"
    )
    return pg, lite


_ADD_WITHIN_LIMIT = {column: _add_within_limit_sql(column) for column in ("used", "reserved")}


async def read_counter(
    session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int
) -> tuple[int, int]:
    """(used, reserved) of one period; a period nobody consumed in has (0, 0)."""
    rows = await fetch(
        session,
        "SELECT used, reserved FROM entitlement_usage"
        " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3",
        "SELECT used, reserved FROM entitlement_usage"
        " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?",
        tenant_id, entitlement_id, period_start,
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def expired_holds(
    session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int, at: datetime
) -> int:
    """Millionths still held in a period's `reserved` by reservations that expired by `at`.

    Giving them back writes (reservations.sweep); a read subtracts them instead.
    """
    quantities = await session.scalars(
        select(Reservation.quantity).where(
            Reservation.tenant_id == tenant_id, Reservation.entitlement_id == entitlement_id,
            Reservation.status == "open", Reservation.period_start == period_start,
            Reservation.expires_at <= at,
        )
    )
    return sum(int(q * MILLION) for q in quantities)


async def consume(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    period_start: int,
    quantity: int,
    hard_limit: int | None,
) -> Totals | None:
    """Add `quantity` to `used` unless used + reserved would pass `hard_limit` (None: no cap).

    Returns (used, reserved, carried) after the increment, or None when the database refused it.
    """
    return await _add_within_limit(session, "used", (tenant_id, entitlement_id, period_start), quantity, hard_limit)


async def _add_within_limit(
    session: AsyncSession, column: str, key: tuple[str, str, int], quantity: int, hard_limit: int | None
) -> Totals | None:
    hard = MAX_BIGINT if hard_limit is None else min(hard_limit, MAX_BIGINT)
    pg, lite = _ADD_WITHIN_LIMIT[column]
    db, dialect = await driver(session)
    if dialect == "postgresql":
        row = await db.fetchrow(pg, *key, quantity, hard)
    else:
        cursor = await db.execute(lite, (*key, quantity, quantity, hard, hard))
        row = await cursor.fetchone()
        await cursor.close()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


Counter = tuple[str, str, int]  # tenant id, entitlement id, period start (µs)


async def lock_counters(session: AsyncSession, keys: list[Counter]) -> dict[Counter, Totals]:
    """Lock the counter rows of `keys` for this transaction, opening empty ones; their
    (used, reserved, carried). Adding nothing takes the rows' locks and reads them in one
    statement per tenant, in key order, so concurrent batches never deadlock."""
    by_tenant: dict[str, list[tuple[str, int, int]]] = {}
    for tenant_id, entitlement_id, period_start in sorted(set(keys)):
        by_tenant.setdefault(tenant_id, []).append((entitlement_id, period_start, 0))
    found: dict[Counter, Totals] = {}
    for tenant_id, nothing in by_tenant.items():
        for (entitlement_id, period_start), values in (await add_usage(session, tenant_id, nothing)).items():
            found[(tenant_id, entitlement_id, period_start)] = values
    return found


_TAKE_WHOLE = (
    "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved)"
    " SELECT d.t, d.e, d.p, d.q, 0"
    " FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) AS d(t, e, p, q, hard)"
    " WHERE d.q <= d.hard ORDER BY d.t, d.e, d.p"
    " ON CONFLICT (tenant_id, entitlement_id, period_start) DO UPDATE SET used = GREATEST(u.used, 0) + EXCLUDED.used"
    " WHERE GREATEST(u.used, 0) + u.reserved <= ("
    "   SELECT h.hard FROM unnest($1::text[], $2::text[], $3::int8[], $5::int8[]) AS h(t, e, p, hard)"
    "   WHERE h.t = EXCLUDED.tenant_id AND h.e = EXCLUDED.entitlement_id AND h.p = EXCLUDED.period_start"
    " ) - EXCLUDED.used"
    " RETURNING tenant_id, entitlement_id, period_start, used, reserved, COALESCE(carried, 0)"
)


# Which feature a key (or id) `{feature}` names for the customer `{customer_id}` at `{at}`.
# Archiving frees a key, and whoever holds the archived feature keeps it (OpenMeter resolves a
# customer's entitlement by its feature key the same way), so the name depends on the customer:
# the archived feature the customer holds (the latest archived), unless it holds the live one
# too; otherwise the live feature; else, as ids name exactly one feature, the live one with
# that id; else the latest archived with the key, else the archived one with that id. COALESCE
# reads an argument only when those before it found nothing; every part is an index probe.
def _held(feature_id: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM customer_entitlements h WHERE h.tenant_id = {tenant}"
        " AND h.customer_id = {customer_id} AND h.feature_id = " + feature_id +
        " AND h.active_from <= {at} AND (h.active_to IS NULL OR h.active_to > {at}))"
    )


# The live feature by key as a value of its own: a plan made on empty tables reads it by the
# live key index (joined to the customer's rows instead, one such plan walked every feature).
_LIVE_BY_KEY = "(SELECT id FROM features WHERE tenant_id = {tenant} AND key = {feature} AND archived_at IS NULL)"
FEATURE_NAMED = (
    "COALESCE((SELECT a.id FROM features a WHERE a.tenant_id = {tenant} AND a.key = {feature}"
    " AND a.archived_at IS NOT NULL AND " + _held("a.id") +
    " AND NOT " + _held(_LIVE_BY_KEY) + " ORDER BY a.archived_at DESC LIMIT 1),"
    " " + _LIVE_BY_KEY + ","
    " (SELECT id FROM features WHERE id = {feature} AND tenant_id = {tenant} AND archived_at IS NULL),"
    " (SELECT id FROM features WHERE tenant_id = {tenant} AND key = {feature} AND archived_at IS NOT NULL"
    " ORDER BY archived_at DESC LIMIT 1),"
    " (SELECT id FROM features WHERE id = {feature} AND tenant_id = {tenant}))"
)
_FEATURE_NAMED_PG = "SELECT " + FEATURE_NAMED.format(tenant="$1", customer_id="$2", feature="$3", at="$4")
_FEATURE_NAMED_SQLITE = "SELECT " + FEATURE_NAMED.format(tenant="?1", customer_id="?2", feature="?3", at="?4")


async def feature_named(
    session: AsyncSession, tenant_id: str, customer_id: str, feature: str, at: datetime
) -> str | None:
    """The id of the feature `feature` (a key or an id) names for the customer at `at`."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    rows = await fetch(session, _FEATURE_NAMED_PG, _FEATURE_NAMED_SQLITE, tenant_id, customer_id, feature,
                       sqlite_time(at) if sqlite else at)
    return None if rows[0][0] is None else str(rows[0][0])


def sqlite_time(at: datetime) -> str:
    """`at` as SQLite keeps times (UTCDateTime: naive UTC text, compared as text)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# Whether the feature `f` of the customer's row `e` in force, named by `{feature}`, is still what
# that name resolves to (FEATURE_NAMED): it is live (the customer holds it), or archived with no
# other feature under the key the customer may hold from `{since}` on (live, or archived later).
# Rows are judged from `{since}` (at or before the check's time, the period start) rather than at
# the check's time, so the proof needs no clock: a row that ended since, or starts later, only
# sends a check the full way, which resolves the name afresh. Read from the customer's rows (by
# its index) and each row's feature by primary key: a plan made on empty tables stays an index
# look-up (from the features by key, one such plan walked every feature by primary key).
NAMES_HELD_FEATURE = (
    "(f.archived_at IS NULL OR NOT EXISTS (SELECT 1 FROM customer_entitlements h"
    " WHERE h.customer_id = e.customer_id AND h.tenant_id = e.tenant_id AND h.feature_id <> f.id"
    " AND (h.active_to IS NULL OR h.active_to > {since})"
    " AND (SELECT l.key = {feature} AND (l.archived_at IS NULL OR l.archived_at > f.archived_at)"
    " FROM features l WHERE l.id = h.feature_id)))"
)


# The common consume on PostgreSQL in one statement of its own: prove each counter's
# remembered entitlement row still answers (the fast path's proof: fastpath.py), then add each
# counter's whole quantity where it stays within the hard limit, is not the period's first usage
# (from the carry, or from zero) and crosses no level anything would be told about. Rows are
# locked in key order first, as everywhere. Returns a row with NULLs per proven counter, and one
# with `used`, `reserved` and `carried` after the addition per taken one.
# Whether the entitlement row a process remembers for a check's names still answers them
# (resolve.py), with its counter in the period starting at {period}: the row, its customer still
# live under its name, its feature still what the name means for it (NAMES_HELD_FEATURE); whether a grant was live at some instant since {since}
# (the period's start); the first expiry of its open holds. The fast path reads it
# (fastpath.py); the consume below proves with the same text.
PROOF_AND_COUNTER = """
SELECT e.active_to AS active_to, u.used AS used, u.reserved AS reserved, u.carried AS carried,
  EXISTS (SELECT 1 FROM grants g
          WHERE g.tenant_id = e.tenant_id AND g.customer_id = e.customer_id
            AND g.feature_id = e.feature_id AND (g.voided_at IS NULL OR g.voided_at > {since})
            AND (g.expires_at IS NULL OR g.expires_at > {since})) AS granted,
  (SELECT MIN(r.expires_at) FROM reservations r
   WHERE r.tenant_id = e.tenant_id AND r.entitlement_id = e.id AND r.status = 'open') AS first_hold_expiry
FROM customer_entitlements e
LEFT JOIN entitlement_usage u
  ON u.tenant_id = e.tenant_id AND u.entitlement_id = e.id AND u.period_start = {period}
WHERE e.id = {id} AND e.tenant_id = {tenant}
  AND (SELECT c.deleted_at IS NULL AND (c.key = {customer} OR c.id = {customer})
       FROM customers c WHERE c.id = e.customer_id)
  AND (SELECT (f.key = {feature} OR f.id = {feature}) AND """ + NAMES_HELD_FEATURE + """
       FROM features f WHERE f.id = e.feature_id)
"""

_TAKE_PROVEN = """
WITH k AS (
  SELECT * FROM """ + rows_of("$1", [
    "t text", "e text", "p int8", "q int8", "hard int8", "customer text", "feature text", "since timestamptz",
    "active_to timestamptz null", "carries bool", "watch bool", "quiet bool", "levels text null"]) + """
), proven AS (
  SELECT k.* FROM k CROSS JOIN LATERAL (""" + PROOF_AND_COUNTER.format(
    id="k.e", tenant="k.t", customer="k.customer", feature="k.feature", period="k.p", since="k.since"
) + """) AS x
  WHERE x.active_to IS NOT DISTINCT FROM k.active_to AND NOT x.granted
    AND (x.first_hold_expiry IS NULL OR x.first_hold_expiry > $2::timestamptz)
    -- overage the period may open with is fixed by the full check first, as fastpath.py reads
    AND (NOT k.carries OR x.carried IS NOT NULL)
), held AS (
  SELECT x.* FROM (SELECT * FROM proven ORDER BY t, e, p) AS x CROSS JOIN LATERAL (
    SELECT 1 FROM customer_entitlements hr
    WHERE hr.id = x.e AND hr.active_to IS NOT DISTINCT FROM x.active_to FOR SHARE
  ) AS row_held
), locked AS (
  SELECT x.* FROM held AS x CROSS JOIN LATERAL (
    SELECT 1 FROM entitlement_usage u
    WHERE u.tenant_id = x.t AND u.entitlement_id = x.e AND u.period_start = x.p FOR UPDATE
  ) AS row_lock
), moved AS (
  UPDATE entitlement_usage u SET used = GREATEST(u.used, 0) + x.q
  FROM locked x
  WHERE u.tenant_id = x.t AND u.entitlement_id = x.e AND u.period_start = x.p AND x.quiet
    AND x.q <= x.hard AND GREATEST(u.used, 0) + u.reserved <= x.hard - x.q
    AND (NOT x.watch OR (u.used > COALESCE(u.carried, 0) AND NOT EXISTS (
         SELECT 1 FROM unnest(string_to_array(x.levels, ',')::int8[]) AS v(level)
         WHERE v.level > u.used AND v.level - x.q <= u.used)))
  RETURNING x.i, u.used, u.reserved, COALESCE(u.carried, 0) AS carried
)
SELECT i, used, reserved, carried FROM moved UNION ALL SELECT i, NULL, NULL, NULL FROM held
"""


class Proven(NamedTuple):
    """One counter's part of `take_proven`: its key, whole quantity and hard limit (millionths),
    the names and remembered `active_to` that prove its row, the period start (grants since
    then, live or ended, send it the full way), the latest time of its consumes (a hold expired
    by the latest of a batch does too), and the levels past which its usage would be told about."""

    counter: Counter
    quantity: int
    hard: int
    customer: str
    feature: str
    active_to: datetime | None
    since: datetime
    at: datetime
    carries: bool
    watch: bool  # the first usage of a period is told about, and so is reaching a level
    quiet: bool  # False: what would be told cannot be known here; never take it this way
    levels: tuple[int, ...]


async def take_proven(db: Database, counters: list[Proven]) -> dict[int, Totals | None]:
    """counter index -> (used, reserved, carried) after the addition, None where proven but not taken;
    an index missing was not proven. One statement, committed when it returns (PostgreSQL).

    Each row is held (`FOR SHARE`, see `hold_rows`) before its counter is locked, and proven
    again once held: a change that ended it meanwhile is seen, never counted past."""
    rows = await db.statement_alone(
        _TAKE_PROVEN,
        pack([(*c.counter, c.quantity, c.hard, c.customer, c.feature, c.since, c.active_to, c.carries,
               c.watch, c.quiet, ",".join(map(str, c.levels))) for c in counters]),
        max(c.at for c in counters),
    )
    found: dict[int, Totals | None] = {}
    for index, used, reserved, carried in rows:
        if used is not None:
            found[int(index) - 1] = (int(used), int(reserved), int(carried))
        else:
            found.setdefault(int(index) - 1, None)
    return found


# The rows' `active_to` as they stand once held: a row another transaction is ending (a plan
# change, an override) is read after that commits (READ COMMITTED reads the held row again).
_HOLD_ROWS = "SELECT id, active_to FROM customer_entitlements WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE"


async def hold_rows(session: AsyncSession, read: dict[str, datetime | None]) -> set[str]:
    """The entitlement rows of `read` (id -> `active_to` as the caller read it) that still end
    then, held until the transaction ends so that no change ends them meanwhile.

    A row that takes over mid-period starts its counter with the old row's (`carry_counter`):
    usage added to the old counter after that copy would be lost. So whatever adds to a
    counter holds its row first; ending the row waits for those in flight (PostgreSQL: `FOR
    SHARE`, in id order, against the change's update; SQLite: the single writer), and a row
    found ended sends the caller to resolve its names again.
    """
    if not read:
        return set()
    db, dialect = await driver(session)
    ids = sorted(read)
    if dialect == "postgresql":
        rows = await db.fetch(_HOLD_ROWS, ids)
    else:
        marks = ", ".join("?" * len(ids))
        rows = await db.execute_fetchall(f"SELECT id, active_to FROM customer_entitlements WHERE id IN ({marks})", ids)
    return {row[0] for row in rows if utc(row[1]) == read[row[0]]}


async def hold_rows_on(connection: Any, read: dict[str, datetime | None]) -> set[str]:
    """`hold_rows` on an asyncpg connection in a transaction of its own (PostgreSQL)."""
    rows = await connection.fetch(_HOLD_ROWS, sorted(read)) if read else []
    return {row[0] for row in rows if row[1] == read[row[0]]}


def utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as the drivers return it (SQLite: naive UTC text) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def take_whole(
    session: AsyncSession, wanted: dict[Counter, tuple[int, int]]
) -> dict[Counter, Totals]:
    """Add to each counter its whole (quantity, hard limit) where `used + reserved` stays
    within the limit, in one statement; the counters taken, with their (used, reserved,
    carried) as they were before this addition.

    PostgreSQL only (SQLite's single writer gains nothing from it: {} there). The rows are
    locked in key order, as `lock_counters` does; a counter it does not take is locked too
    when it exists (an upsert locks every row it conflicts with, updated or not).
    """
    if session.get_bind().dialect.name != "postgresql" or not wanted:
        return {}
    return _taken(await fetch_opening(session, _TAKE_WHOLE, *_take_whole_args(wanted)), wanted)


async def take_whole_on(connection: Any, wanted: dict[Counter, tuple[int, int]]) -> dict[Counter, Totals]:
    """`take_whole` on an asyncpg connection in a transaction of its own (no ORM session)."""
    return _taken(await connection.fetch(_TAKE_WHOLE, *_take_whole_args(wanted)), wanted)


def _take_whole_args(wanted: dict[Counter, tuple[int, int]]) -> list[Any]:
    # A sum above its hard limit can never be taken whole (and may not fit 64 bits); when no
    # sum fits, the statement still gets its five (empty) arrays and takes nothing.
    keys = sorted(k for k, (quantity, hard) in wanted.items() if quantity <= hard)
    tenants, entitlements, periods = ([list(c) for c in zip(*keys, strict=True)] if keys else [[], [], []])
    return [tenants, entitlements, periods, [wanted[k][0] for k in keys], [wanted[k][1] for k in keys]]


def _taken(rows: Any, wanted: dict[Counter, tuple[int, int]]) -> dict[Counter, Totals]:
    """(used, reserved, carried) before the addition, of each counter the statement returned."""
    taken = {}
    for r in rows:
        counter = (r[0], r[1], int(r[2]))
        taken[counter] = (int(r[3]) - wanted[counter][0], int(r[4]), int(r[5]))
    return taken


async def add_to_locked(session: AsyncSession, increments: dict[Counter, int]) -> None:
    """Add millionths to `used` of counters this transaction locked (lock_counters)."""
    if not increments:
        return
    db, dialect = await driver(session)
    keys = sorted(increments)
    if dialect == "postgresql":
        await db.execute(
            "UPDATE entitlement_usage AS u SET used = GREATEST(u.used, 0) + d.q"
            " FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS d(t, e, p, q)"
            " WHERE u.tenant_id = d.t AND u.entitlement_id = d.e AND u.period_start = d.p",
            *zip(*keys, strict=True), [increments[k] for k in keys],
        )
        return
    await db.executemany(
        "UPDATE entitlement_usage SET used = MAX(used, 0) + ?"
        " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?",
        [(increments[k], *k) for k in keys],
    )


async def lock_key(session: AsyncSession, tenant_id: str, key: str) -> None:
    """Serialise checks carrying one idempotency key (SQLite's single writer already does)."""
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))", f"{tenant_id}\n{key}")


async def linked_meters(session: AsyncSession, tenant_id: str, meter_ids: set[str]) -> set[str]:
    """The meters among `meter_ids` that some feature counts, archived ones included: their
    customers keep them (every ingest asks)."""
    ids = sorted(meter_ids)
    db, dialect = await driver(session)
    if dialect == "postgresql":
        rows = await db.fetch(
            "SELECT DISTINCT meter_id FROM features WHERE tenant_id = $1"
            " AND meter_id = ANY($2::text[])",
            tenant_id, ids,
        )
    else:
        rows = await db.execute_fetchall(
            "SELECT DISTINCT meter_id FROM features WHERE tenant_id = ?"
            f" AND meter_id IN ({','.join('?' * len(ids))})",
            (tenant_id, *ids),
        )
    return {str(r[0]) for r in rows}


async def add_usage(
    session: AsyncSession, tenant_id: str, increments: list[tuple[str, int, int]]
) -> dict[tuple[str, int], Totals]:
    """Add reported usage (entitlement id, period start, millionths) to the live counters.

    Unconditional: events report usage that already happened, so a hard limit cannot refuse
    it (the next check will deny). A counter that would pass what 64 bits hold stays full at
    MAX_BIGINT (checks then deny with `counter_full`), and one corrected that far below zero
    stays at -MAX_BIGINT, rather than fail the ingest. Sorted, so
    concurrent batches lock rows in one order.
    Returns each counter's (used, reserved, carried) after the addition: with the increment,
    the usage before it follows without another read (for threshold crossings).
    """
    if not increments:
        return {}
    increments = sorted((e, p, max(-MAX_BIGINT, min(q, MAX_BIGINT))) for e, p, q in increments)
    db, dialect = await driver(session)
    if dialect == "postgresql":
        rows = await db.fetch(
            "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved)"
            " SELECT $1, e, p, q, 0 FROM unnest($2::text[], $3::int8[], $4::int8[]) AS t(e, p, q)"
            " ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = CASE"
            " WHEN EXCLUDED.used > 0 AND u.used > $5::int8 - EXCLUDED.used THEN $5::int8"
            " WHEN EXCLUDED.used < 0 AND u.used < -$5::int8 - EXCLUDED.used THEN -$5::int8"
            " ELSE u.used + EXCLUDED.used END"
            " RETURNING entitlement_id, period_start, used, reserved, COALESCE(carried, 0)",
            tenant_id, *zip(*increments, strict=True), MAX_BIGINT,
        )
        return {(r[0], int(r[1])): (int(r[2]), int(r[3]), int(r[4])) for r in rows}
    out: dict[tuple[str, int], Totals] = {}
    for i in range(0, len(increments), _SQLITE_ROWS):
        chunk = increments[i:i + _SQLITE_ROWS]
        returned = await db.execute_fetchall(
            "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
            f" VALUES {', '.join(['(?, ?, ?, ?, 0)'] * len(chunk))}"
            " ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = CASE"
            " WHEN excluded.used > 0 AND used > ? - excluded.used THEN ?"
            " WHEN excluded.used < 0 AND used < -? - excluded.used THEN -?"
            " ELSE used + excluded.used END"
            " RETURNING entitlement_id, period_start, used, reserved, COALESCE(carried, 0)",
            [*(v for inc in chunk for v in (tenant_id, *inc)), *[MAX_BIGINT] * 4],
        )
        out.update({(r[0], int(r[1])): (int(r[2]), int(r[3]), int(r[4])) for r in returned})
    return out


_SQLITE_ROWS = 500  # a few parameters a row, well under SQLite's limit of bound parameters


async def ask_upsell(session: AsyncSession, asks: list[tuple[str, str, int, int | None, int, int]]) -> None:
    """Queue upsell projections: (tenant, entitlement, period start, period end, usage, at),
    at most one per entitlement and period (entitlements/upsell_queue.py).

    A later ask for the same period before the worker came replaces usage and time: the
    projection starts from the latest crossing.
    """
    db, dialect = await driver(session)
    for i in range(0, len(asks), _SQLITE_ROWS):
        chunk = asks[i:i + _SQLITE_ROWS]
        if dialect == "postgresql":
            values = ", ".join(f"(${6 * r + 1}, ${6 * r + 2}, ${6 * r + 3}::int8, ${6 * r + 4}::int8,"
                               f" ${6 * r + 5}::int8, ${6 * r + 6}::int8)" for r in range(len(chunk)))
        else:
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        sql = (
            "INSERT INTO upsell_due (tenant_id, entitlement_id, period_start, period_end, usage, at)"
            f" VALUES {values} ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET usage = excluded.usage, at = excluded.at"
        )
        params = [v for ask in chunk for v in ask]
        if dialect == "postgresql":
            await db.execute(sql, *params)
        else:
            await (await db.execute(sql, params)).close()


# --- seats: a gauge of active items in the counter row of period 0 ---------------------------

SEAT_PERIOD = 0  # a gauge has no usage period: its one counter row has period_start 0


async def lock_seat_item(session: AsyncSession, tenant_id: str, entitlement_id: str, item: str) -> None:
    """Serialise activate/heartbeat/release of one item (SQLite's single writer already does).

    Without it two activations of the same new item could both see no lease and take two seats.
    """
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 17))",
            f"{tenant_id}\n{entitlement_id}\n{item}",
        )


async def free_seats(
    session: AsyncSession, tenant_id: str, entitlement_id: str, quantity: int
) -> tuple[int, int]:
    """Subtract `quantity` from the gauge (seats whose leases ended); returns (used, reserved).

    Only ever called for leases this transaction has just ended, so the gauge cannot go below
    the number of live leases.
    """
    db, dialect = await driver(session)
    key = (tenant_id, entitlement_id, SEAT_PERIOD)
    if dialect == "postgresql":
        row = await db.fetchrow(
            "UPDATE entitlement_usage SET used = used - $4"
            " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3 RETURNING used, reserved",
            *key, quantity,
        )
    else:
        cursor = await db.execute(
            "UPDATE entitlement_usage SET used = used - ?"
            " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ? RETURNING used, reserved",
            (quantity, *key),
        )
        row = await cursor.fetchone()
        await cursor.close()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))



def held_by(row: CustomerEntitlement) -> ColumnElement[bool]:
    """Leases of the row, and those of the rows it took over from (a plan change ended them).

    Until the row's first seat operation adopts them, those leases still hold their seats.
    """
    replaced = select(CustomerEntitlement.id).where(
        CustomerEntitlement.tenant_id == row.tenant_id,
        CustomerEntitlement.customer_id == row.customer_id,
        CustomerEntitlement.feature_id == row.feature_id,
        CustomerEntitlement.kind == row.kind,
        CustomerEntitlement.active_to.is_not(None),
        CustomerEntitlement.active_to <= row.active_from,
    )
    return and_(
        SeatLease.tenant_id == row.tenant_id,
        or_(SeatLease.entitlement_id == row.id, SeatLease.entitlement_id.in_(replaced)),
    )


def live_lease(at: datetime) -> ColumnElement[bool]:
    return and_(SeatLease.released_at.is_(None), or_(SeatLease.expires_at.is_(None), SeatLease.expires_at > at))


async def active_seats(session: AsyncSession, row: CustomerEntitlement, *, at: datetime) -> int:
    """Seats held at `at`, in millionths: live leases only, so a read does not depend on
    whether an expired lease has been swept yet, or a plan change's leases adopted yet."""
    count = await session.scalar(
        select(func.count()).select_from(SeatLease).where(held_by(row), live_lease(at))
    )
    return int(count or 0) * MILLION


async def adopt_seats(session: AsyncSession, row: CustomerEntitlement, *, at: datetime) -> None:
    """Before a seats row's first operation: take over the live leases of the rows it replaced.

    A plan change ends one entitlement row and starts another; the items holding seats keep
    them. The gauge row is created here with the adopted count, so later operations skip
    this (one indexed read). Concurrent first operations: one moves the leases and creates
    the gauge; the other then finds no lease left to move and the gauge already there.
    """
    key = (row.tenant_id, row.id, SEAT_PERIOD)
    if await _has_counter(session, *key):
        return
    moved = await session.execute(
        update(SeatLease)
        .where(held_by(row), SeatLease.entitlement_id != row.id, live_lease(at))
        .values(entitlement_id=row.id)
        .execution_options(synchronize_session=False)
    )
    await _open_gauge(session, *key, moved.rowcount * MILLION)  # type: ignore[attr-defined]


async def _has_counter(session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int) -> bool:
    rows = await fetch(
        session,
        "SELECT 1 FROM entitlement_usage WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3",
        "SELECT 1 FROM entitlement_usage WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?",
        tenant_id, entitlement_id, period_start,
    )
    return bool(rows)


async def _open_gauge(session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int, used: int) -> None:
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
            " VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
            tenant_id, entitlement_id, period_start, used,
        )
    else:
        cursor = await db.execute(
            "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
            " VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            (tenant_id, entitlement_id, period_start, used),
        )
        await cursor.close()


# --- reservations: holds in the `reserved` column of the same counter row ---------------------

async def reserve(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    period_start: int,
    quantity: int,
    hard_limit: int | None,
) -> tuple[int, int] | None:
    """Hold `quantity` in `reserved` unless used + reserved would pass `hard_limit` (None: no cap).

    Returns (used, reserved) after the hold, or None when the database refused it.
    """
    held = await _add_within_limit(
        session, "reserved", (tenant_id, entitlement_id, period_start), quantity, hard_limit
    )
    return None if held is None else held[:2]


async def settle(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    period_start: int,
    held: int,
    actual: int,
    hard_limit: int | None,
) -> Totals | None:
    """Move a hold of `held` out of `reserved` and `actual` into `used`, in one statement.

    When `actual` exceeds `held` the extra must fit under `hard_limit`; None: refused.
    With `actual` 0 this is a release, which always succeeds. Returns (used, reserved, carried).
    """
    hard = MAX_BIGINT if hard_limit is None else min(hard_limit, MAX_BIGINT)
    db, dialect = await driver(session)
    key = (tenant_id, entitlement_id, period_start)
    if dialect == "postgresql":
        row = await db.fetchrow(
            "UPDATE entitlement_usage AS u SET reserved = reserved - $4::int8, used = GREATEST(u.used, 0) + $5::int8"
            " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3"
            " AND ($5::int8 <= $4::int8 OR GREATEST(u.used, 0) + reserved - $4::int8 <= $6::int8 - $5::int8)"
            " RETURNING used, reserved, COALESCE(carried, 0)",
            *key, held, actual, hard,
        )
    else:
        cursor = await db.execute(
            "UPDATE entitlement_usage SET reserved = reserved - ?, used = MAX(used, 0) + ?"
            " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?"
            " AND (? <= ? OR MAX(used, 0) + reserved - ? <= ? - ?)"
            " RETURNING used, reserved, COALESCE(carried, 0)",
            (held, actual, *key, actual, held, held, hard, actual),
        )
        row = await cursor.fetchone()
        await cursor.close()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


async def unreserve(session: AsyncSession, tenant_id: str, entitlement_id: str, holds: list[tuple[int, int]]) -> None:
    """Give back holds (period start, millionths) that expired; sorted, so rows lock in one order."""
    db, dialect = await driver(session)
    for period_start, quantity in sorted(holds):
        if dialect == "postgresql":
            await db.execute(
                "UPDATE entitlement_usage SET reserved = reserved - $4"
                " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3",
                tenant_id, entitlement_id, period_start, quantity,
            )
        else:
            cursor = await db.execute(
                "UPDATE entitlement_usage SET reserved = reserved - ?"
                " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?",
                (quantity, tenant_id, entitlement_id, period_start),
            )
            await cursor.close()


async def lock_reservation_key(session: AsyncSession, tenant_id: str, key: str) -> None:
    """Serialise reservations carrying one idempotency key (SQLite's single writer already does)."""
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 19))", f"{tenant_id}\n{key}")


# --- grants and overage at reset: the history of one entitlement's counters -------------------

async def counter_state(
    session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int
) -> tuple[int, int, int | None] | None:
    """(used, reserved, carried) of one period's counter, None when it has no row yet."""
    rows = await fetch(
        session,
        "SELECT used, reserved, carried FROM entitlement_usage"
        " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3",
        "SELECT used, reserved, carried FROM entitlement_usage"
        " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?",
        tenant_id, entitlement_id, period_start,
    )
    if not rows:
        return None
    used, reserved, carried = rows[0]
    return int(used), int(reserved), None if carried is None else int(carried)


async def counters_between(
    session: AsyncSession, tenant_id: str, entitlement_ids: list[str], since: int, before: int
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(entitlement id, period start) -> (used, carried) of the periods starting in [since, before)."""
    found = await session.execute(
        select(EntitlementUsage.entitlement_id, EntitlementUsage.period_start,
               EntitlementUsage.used, EntitlementUsage.carried)
        .where(
            EntitlementUsage.tenant_id == tenant_id,
            EntitlementUsage.entitlement_id.in_(entitlement_ids),
            EntitlementUsage.period_start >= since,
            EntitlementUsage.period_start < before,
        )
    )
    return {(e, int(p)): (int(u), None if c is None else int(c)) for e, p, u, c in found}


async def latest_carried(
    session: AsyncSession, tenant_id: str, entitlement_id: str, *, at_or_before: int
) -> int | None:
    """The start of the latest period up to `at_or_before` whose carry is fixed, if any."""
    latest = await session.scalar(
        select(func.max(EntitlementUsage.period_start)).where(
            EntitlementUsage.tenant_id == tenant_id,
            EntitlementUsage.entitlement_id == entitlement_id,
            EntitlementUsage.period_start <= at_or_before,
            EntitlementUsage.carried.is_not(None),
        )
    )
    return None if latest is None else int(latest)


_CARRY = (
    "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved, carried)"
    " SELECT tenant_id, {p}3, period_start, used, 0, carried FROM entitlement_usage"
    " WHERE tenant_id = {p}1 AND entitlement_id = {p}2 AND period_start = {p}4"
    " ON CONFLICT (tenant_id, entitlement_id, period_start) DO NOTHING"
)


async def carry_counter(
    session: AsyncSession, tenant_id: str, from_id: str, to_id: str, period_start: int
) -> None:
    """Start `to_id`'s counter of a period with what `from_id`'s holds (used, and the overage
    carry already in it); holds move with their reservations (reservations.hand_over). Once: a counter
    `to_id` already has (copied before in this transaction) is left as it is."""
    db, dialect = await driver(session)
    args = (tenant_id, from_id, to_id, period_start)
    if dialect == "postgresql":
        await db.execute(_CARRY.format(p="$"), *args)
    else:
        await (await db.execute(_CARRY.format(p="?"), args)).close()


async def move_held(
    session: AsyncSession, tenant_id: str, from_id: str, to_id: str, period_start: int, amount: int
) -> None:
    """Move `amount` (millionths) of holds from one row's counter of a period to another's."""
    for entitlement_id, change in ((from_id, -amount), (to_id, amount)):
        await session.execute(
            update(EntitlementUsage)
            .where(EntitlementUsage.tenant_id == tenant_id, EntitlementUsage.entitlement_id == entitlement_id,
                   EntitlementUsage.period_start == period_start)
            .values(reserved=EntitlementUsage.reserved + change)
            .execution_options(synchronize_session=False)
        )


async def fix_carry(
    session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int, carried: int
) -> tuple[int, int]:
    """Add `carried` to a period's usage once: creates the row, or fills it if its carry is unset.

    One statement, conditional on `carried IS NULL`, so under any concurrency exactly one
    transaction carries the overage in; the others find it done. Returns (used, reserved).
    """
    db, dialect = await driver(session)
    key = (tenant_id, entitlement_id, period_start)
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved, carried)"
            " VALUES ($1, $2, $3, $4::int8, 0, $4::int8)"
            " ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = u.used + EXCLUDED.carried, carried = EXCLUDED.carried"
            " WHERE u.carried IS NULL",
            *key, carried,
        )
    else:
        cursor = await db.execute(
            "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved, carried)"
            " VALUES (?, ?, ?, ?, 0, ?)"
            " ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = used + excluded.carried, carried = excluded.carried"
            " WHERE carried IS NULL",
            (*key, carried, carried),
        )
        await cursor.close()
    return await read_counter(session, *key)


async def usage_at_recurrences(
    session: AsyncSession, tenant_id: str, grant_ids: list[str], *, after: int, until: int
) -> dict[tuple[str, int], int]:
    """(grant id, instant) -> the usage kept at each start-over in (after, until]."""
    found = await session.execute(
        select(GrantRecurrence.grant_id, GrantRecurrence.at_us, GrantRecurrence.used).where(
            GrantRecurrence.tenant_id == tenant_id,
            GrantRecurrence.grant_id.in_(grant_ids),
            GrantRecurrence.at_us > after,
            GrantRecurrence.at_us <= until,
        )
    )
    return {(g, int(t)): int(u) for g, t, u in found}


async def latest_recurrences(
    session: AsyncSession, tenant_id: str, grant_ids: list[str], *, after: int
) -> dict[str, int]:
    """grant id -> the latest start-over after `after` whose usage is kept (none: left out)."""
    found = await session.execute(
        select(GrantRecurrence.grant_id, func.max(GrantRecurrence.at_us))
        .where(GrantRecurrence.tenant_id == tenant_id, GrantRecurrence.grant_id.in_(grant_ids),
               GrantRecurrence.at_us > after)
        .group_by(GrantRecurrence.grant_id)
    )
    return {g: int(t) for g, t in found}


async def keep_usage_at_recurrences(
    session: AsyncSession, tenant_id: str, entitlement_id: str, period_start: int,
    starts: list[tuple[str, int]],
) -> None:
    """Keep the counter's current `used` for each (grant id, instant) that has none yet.

    Called before the counter moves, by every writer once a start-over has passed: the first
    one keeps the usage of that instant, the others find it kept (ON CONFLICT DO NOTHING).
    """
    db, dialect = await driver(session)
    used_now = (
        "COALESCE((SELECT used FROM entitlement_usage WHERE tenant_id = {t} AND entitlement_id = {e}"
        " AND period_start = {p}), 0)"
    )
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO grant_recurrences (tenant_id, grant_id, at_us, used)"
            f" SELECT $1::varchar, g, a, {used_now.format(t='$1::varchar', e='$2::varchar', p='$3::int8')}"
            " FROM unnest($4::text[], $5::int8[]) AS s(g, a) ON CONFLICT DO NOTHING",
            tenant_id, entitlement_id, period_start, [g for g, _ in starts], [a for _, a in starts],
        )
    else:
        await db.executemany(
            "INSERT INTO grant_recurrences (tenant_id, grant_id, at_us, used)"
            f" VALUES (?1, ?4, ?5, {used_now.format(t='?1', e='?2', p='?3')}) ON CONFLICT DO NOTHING",
            [(tenant_id, entitlement_id, period_start, g, a) for g, a in starts],
        )
