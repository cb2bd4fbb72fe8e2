"""The check hot-path SQL on the driver connection, one function per statement.

Quantities are integer millionths. Consuming is one conditional upsert, so the database
compares and increments in one step on one row: concurrent consumers (any number of
processes) can never push `used + reserved` past the hard limit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import driver, fetch
from allotment.entitlements.models import SeatLease

MILLION = 1_000_000
MAX_BIGINT = 2**63 - 1

def _add_within_limit_sql(column: str) -> tuple[str, str]:
    """One conditional upsert adding to `used` or `reserved`, refused past the hard limit."""
    values = "$4::int8, 0" if column == "used" else "0, $4::int8"
    pg = (
        "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved)"
        f" SELECT $1, $2, $3, {values} WHERE $4::int8 <= $5::int8"
        " ON CONFLICT (tenant_id, entitlement_id, period_start)"
        f" DO UPDATE SET {column} = u.{column} + EXCLUDED.{column}"
        f" WHERE u.used + u.reserved + EXCLUDED.{column} <= $5::int8"
        " RETURNING used, reserved"
    )
    lite_values = "?, 0" if column == "used" else "0, ?"
    lite = (
        "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
        f" SELECT ?, ?, ?, {lite_values} WHERE ? <= ?"
        " ON CONFLICT (tenant_id, entitlement_id, period_start)"
        f" DO UPDATE SET {column} = {column} + excluded.{column}"
        f" WHERE used + reserved + excluded.{column} <= ?"
        " RETURNING used, reserved"
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


async def consume(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    period_start: int,
    quantity: int,
    hard_limit: int | None,
) -> tuple[int, int] | None:
    """Add `quantity` to `used` unless used + reserved would pass `hard_limit` (None: no cap).

    Returns (used, reserved) after the increment, or None when the database refused it.
    """
    return await _add_within_limit(session, "used", (tenant_id, entitlement_id, period_start), quantity, hard_limit)


async def _add_within_limit(
    session: AsyncSession, column: str, key: tuple[str, str, int], quantity: int, hard_limit: int | None
) -> tuple[int, int] | None:
    hard = MAX_BIGINT if hard_limit is None else min(hard_limit, MAX_BIGINT)
    pg, lite = _ADD_WITHIN_LIMIT[column]
    db, dialect = await driver(session)
    if dialect == "postgresql":
        row = await db.fetchrow(pg, *key, quantity, hard)
    else:
        cursor = await db.execute(lite, (*key, quantity, quantity, hard, hard))
        row = await cursor.fetchone()
        await cursor.close()
    return None if row is None else (int(row[0]), int(row[1]))


async def lock_key(session: AsyncSession, tenant_id: str, key: str) -> None:
    """Serialise checks carrying one idempotency key (SQLite's single writer already does)."""
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))", f"{tenant_id}\n{key}")


async def add_usage(session: AsyncSession, tenant_id: str, increments: list[tuple[str, int, int]]) -> None:
    """Add reported usage (entitlement id, period start, millionths) to the live counters.

    Unconditional: events report usage that already happened, so a hard limit cannot refuse
    it (the next check will deny). Sorted, so concurrent batches lock rows in one order.
    """
    if not increments:
        return
    increments.sort()
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO entitlement_usage AS u (tenant_id, entitlement_id, period_start, used, reserved)"
            " SELECT $1, e, p, q, 0 FROM unnest($2::text[], $3::int8[], $4::int8[]) AS t(e, p, q)"
            " ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = u.used + EXCLUDED.used",
            tenant_id, *zip(*increments, strict=True),
        )
    else:
        await db.executemany(
            "INSERT INTO entitlement_usage (tenant_id, entitlement_id, period_start, used, reserved)"
            " VALUES (?, ?, ?, ?, 0) ON CONFLICT (tenant_id, entitlement_id, period_start)"
            " DO UPDATE SET used = used + excluded.used",
            [(tenant_id, *inc) for inc in increments],
        )


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



async def active_seats(session: AsyncSession, tenant_id: str, entitlement_id: str, *, at: datetime) -> int:
    """Seats held at `at`, in millionths: live leases only, so a read does not depend on
    whether an expired lease has been swept yet."""
    count = await session.scalar(
        select(func.count()).select_from(SeatLease).where(
            SeatLease.tenant_id == tenant_id,
            SeatLease.entitlement_id == entitlement_id,
            SeatLease.released_at.is_(None),
            or_(SeatLease.expires_at.is_(None), SeatLease.expires_at > at),
        )
    )
    return int(count or 0) * MILLION


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
    return await _add_within_limit(
        session, "reserved", (tenant_id, entitlement_id, period_start), quantity, hard_limit
    )


async def settle(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    period_start: int,
    held: int,
    actual: int,
    hard_limit: int | None,
) -> tuple[int, int] | None:
    """Move a hold of `held` out of `reserved` and `actual` into `used`, in one statement.

    When `actual` exceeds `held` the extra must fit under `hard_limit`; None: refused.
    With `actual` 0 this is a release, which always succeeds.
    """
    hard = MAX_BIGINT if hard_limit is None else min(hard_limit, MAX_BIGINT)
    db, dialect = await driver(session)
    key = (tenant_id, entitlement_id, period_start)
    if dialect == "postgresql":
        row = await db.fetchrow(
            "UPDATE entitlement_usage SET reserved = reserved - $4::int8, used = used + $5::int8"
            " WHERE tenant_id = $1 AND entitlement_id = $2 AND period_start = $3"
            " AND ($5::int8 <= $4::int8 OR used + reserved - $4::int8 + $5::int8 <= $6::int8)"
            " RETURNING used, reserved",
            *key, held, actual, hard,
        )
    else:
        cursor = await db.execute(
            "UPDATE entitlement_usage SET reserved = reserved - ?, used = used + ?"
            " WHERE tenant_id = ? AND entitlement_id = ? AND period_start = ?"
            " AND (? <= ? OR used + reserved - ? + ? <= ?)"
            " RETURNING used, reserved",
            (held, actual, *key, actual, held, held, actual, hard),
        )
        row = await cursor.fetchone()
        await cursor.close()
    return None if row is None else (int(row[0]), int(row[1]))


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
