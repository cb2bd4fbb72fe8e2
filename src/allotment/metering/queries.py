"""The metering hot-path SQL, one function per statement, dialect-specific where it pays.

These run on the driver connection of the session's transaction (asyncpg or aiosqlite), which
skips SQLAlchemy's statement compilation: a 500-event batch is one round trip per table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import ColumnElement, literal_column
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.db import driver, fetch, fetch_opening
from allotment.packed import pack, rows_of

EventRow = tuple[str, str, str, str, int, int, str | None]  # source, id, type, subject, time, recv, data
RollupRow = tuple[str, int, str, str, int, int, int, int, int, int, int]
DistinctRow = tuple[str, int, str, str, int, str]

_SQLITE_ROWS_PER_STATEMENT = 2000  # 8 parameters a row, well under SQLite's 32,766


def events_of_tenant(session: AsyncSession, tenant_id: str, *, newest_first: bool) -> ColumnElement[bool]:
    """The condition selecting a tenant's events. Newest first without a type or time (the
    event list), SQLite is told not to use the (tenant, type, minute) index for the tenant
    alone: with no statistics it prefers that index, then sorts every event of the tenant to
    return the newest few, seconds on a log of millions; walking the log backwards stops at
    the page's last row. PostgreSQL weighs both ways by its statistics."""
    if newest_first and session.get_bind().dialect.name == "sqlite":
        return literal_column("+events.tenant_id") == tenant_id  # unary +: no index on the column
    return literal_column("events.tenant_id") == tenant_id


async def lock_tenant_shared(session: AsyncSession, tenant_id: str) -> None:
    """Ingest holds this shared; changing meters holds it exclusively (see docs/storage.md)."""
    if session.get_bind().dialect.name == "postgresql":
        await fetch_opening(session, "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 7))", tenant_id)


async def lock_tenant_exclusive(session: AsyncSession, tenant_id: str) -> None:
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", tenant_id)


_PG_EVENT_ROWS = (
    "SELECT $1, k.source, k.event_id, k.type, k.subject, k.time_us, k.received_us, k.data FROM "
    + rows_of("$2", ["source text", "event_id text", "type text", "subject text", "time_us int8",
                     "received_us int8", "data text null"])
)
_PG_EVENT_COLUMNS = "events (tenant_id, source, event_id, type, subject, time_us, received_us, data)"
# Every row new, or the statement fails on the identity key (and its savepoint is rolled back).
_PG_APPEND_EVENTS = f"INSERT INTO {_PG_EVENT_COLUMNS} {_PG_EVENT_ROWS}"
# Known identities skipped: the count stored, and which, only when some were skipped.
_PG_INSERT_NEW_EVENTS = (
    f"WITH inserted AS (INSERT INTO {_PG_EVENT_COLUMNS} {_PG_EVENT_ROWS}"
    " ON CONFLICT ON CONSTRAINT uq_events_identity DO NOTHING RETURNING source, event_id)"
    " SELECT count(*), CASE WHEN count(*) < $3 THEN array_agg(source) END,"
    " CASE WHEN count(*) < $3 THEN array_agg(event_id) END FROM inserted"
)
# After a batch of a tenant met a known identity, its next batches skip the plain append.
_CAREFUL_AFTER_CONFLICT = 100
_careful: dict[str, int] = {}  # tenant id -> batches left to insert with ON CONFLICT at once


async def insert_events(
    session: AsyncSession, tenant_id: str, rows: Sequence[EventRow]
) -> set[tuple[str, str]] | None:
    """Append events, skipping known identities; returns the (source, id) actually inserted,
    or None when every row was."""
    if not rows:
        return None
    db, dialect = await driver(session)
    if dialect == "postgresql":
        packed = pack(rows)
        if packed is None:
            raise ValueError("an event attribute holds a control character (the decoder refuses them)")
        if await _appended(db, tenant_id, packed):
            return None
        # The identities come back only when some were known already: most batches are all
        # new, and reading back one row per event cost over a fifth of the insert's client CPU.
        count, sources, ids = await db.fetchrow(_PG_INSERT_NEW_EVENTS, tenant_id, packed, len(rows))
        return None if count == len(rows) else set(zip(sources or (), ids or (), strict=True))
    # SQLite has one writer, so the rows this transaction adds are those above the largest
    # seq before it: read back only when some row was ignored. Returning every inserted row
    # instead cost a sixth of the insert, inside the writer's turn.
    (last_before,), = await db.execute_fetchall("SELECT COALESCE(MAX(seq), 0) FROM events")
    count = 0
    for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start : start + _SQLITE_ROWS_PER_STATEMENT]
        params: list[Any] = []
        for row in chunk:
            params.append(tenant_id)
            params.extend(row)
        values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk))
        async with db.execute(
            "INSERT OR IGNORE INTO events (tenant_id, source, event_id, type, subject, time_us,"
            f" received_us, data) VALUES {values}",
            params,
        ) as cursor:
            count += cursor.rowcount
    if count == len(rows):
        return None
    added = await db.execute_fetchall("SELECT source, event_id FROM events WHERE seq > ?", (last_before,))
    return {(r[0], r[1]) for r in added}


async def _appended(db: Any, tenant_id: str, packed: str) -> bool:
    """Try the batch as all new, with a plain INSERT: True when it was (and is stored).

    `ON CONFLICT DO NOTHING` looks every row up in the identity index before inserting it,
    and the insert then descends the same index again: the look-up was a third of
    PostgreSQL's CPU for a batch. A plain insert only descends to insert, and fails on the
    first known identity; its savepoint is then rolled back and the caller inserts with
    `ON CONFLICT`, as it does at once for the tenant's next batches, for a while, since
    a client that re-sends once often re-sends again.
    """
    left = _careful.pop(tenant_id, 0)
    if left:
        if left > 1:
            _careful[tenant_id] = left - 1
        return False
    await db.execute("SAVEPOINT append_events")
    try:
        await db.execute(_PG_APPEND_EVENTS, tenant_id, packed)
    except asyncpg.UniqueViolationError as exc:
        await db.execute("ROLLBACK TO SAVEPOINT append_events")
        if exc.constraint_name != "uq_events_identity":
            raise
        _careful[tenant_id] = _CAREFUL_AFTER_CONFLICT
        return False
    await db.execute("RELEASE SAVEPOINT append_events")
    return True


async def record_duplicates(
    session: AsyncSession, tenant_id: str, again: dict[tuple[str, str], tuple[int, int]]
) -> None:
    """Count later arrivals of stored events: identity -> (how many, last received µs).

    Only batches that met duplicates pay for this, with one upsert into `event_repeats`
    (the log itself stays append-only). Rows are written in identity order, so two
    transactions counting duplicates of the same events cannot deadlock."""
    found = sorted((source, event_id, n, last) for (source, event_id), (n, last) in again.items())
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO event_repeats AS r (tenant_id, source, event_id, count, last_us)"
            " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[])"
            " ON CONFLICT (tenant_id, source, event_id) DO UPDATE SET count = r.count + EXCLUDED.count,"
            " last_us = GREATEST(r.last_us, EXCLUDED.last_us)",
            tenant_id, *zip(*found, strict=True),
        )
        return
    await db.executemany(
        "INSERT INTO event_repeats (tenant_id, source, event_id, count, last_us) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant_id, source, event_id) DO UPDATE SET count = count + excluded.count,"
        " last_us = max(last_us, excluded.last_us)",
        [(tenant_id, *row) for row in found],
    )


_SQLITE_UPSERT = (
    "INSERT INTO rollups (tenant_id, meter_id, width, subject, group_key, bucket, n, total,"
    " lo, hi, last_value, last_us) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (tenant_id, meter_id, width, subject, group_key, bucket) DO UPDATE SET"
    " n = n + excluded.n,"
    # SQLite's + turns to floating point past 64 bits; abs() of the smallest integer raises
    # "integer overflow" instead, so a sum is exact or not written (upsert_rollups).
    " total = CASE WHEN typeof(total + excluded.total) = 'integer' THEN total + excluded.total"
    " ELSE abs(-9223372036854775808) END,"
    " lo = min(lo, excluded.lo), hi = max(hi, excluded.hi),"
    " last_value = CASE WHEN excluded.last_us >= last_us THEN excluded.last_value"
    " ELSE last_value END, last_us = max(last_us, excluded.last_us)"
)
_PG_UPSERT = (
    "INSERT INTO rollups AS r (tenant_id, meter_id, width, subject, group_key, bucket, n, total,"
    " lo, hi, last_value, last_us) SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::text[],"
    " $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],"
    " $12::int8[])"
    " ON CONFLICT (tenant_id, meter_id, width, subject, group_key, bucket) DO UPDATE SET"
    " n = r.n + EXCLUDED.n, total = r.total + EXCLUDED.total,"
    " lo = LEAST(r.lo, EXCLUDED.lo), hi = GREATEST(r.hi, EXCLUDED.hi),"
    " last_value = CASE WHEN EXCLUDED.last_us >= r.last_us THEN EXCLUDED.last_value"
    " ELSE r.last_value END, last_us = GREATEST(r.last_us, EXCLUDED.last_us)"
)


async def upsert_rollups(session: AsyncSession, tenant_id: str, rows: list[RollupRow]) -> None:
    """Add cells into rollups. Rows must be unique by key; they are sorted so that concurrent
    transactions lock rows in the same order and cannot deadlock."""
    if not rows:
        return
    rows.sort()
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(_PG_UPSERT, tenant_id, *zip(*rows, strict=True))
        return
    try:
        await db.executemany(_SQLITE_UPSERT, [(tenant_id, *row) for row in rows])
    except sqlite3.OperationalError as exc:
        if "integer overflow" in str(exc):
            raise OverflowError("a rollup sum would pass 64 bits") from exc
        raise


async def insert_distinct(session: AsyncSession, tenant_id: str, rows: Iterable[DistinctRow]) -> None:
    ordered = sorted(rows)
    if not ordered:
        return
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute(
            "INSERT INTO rollup_distinct (tenant_id, meter_id, width, subject, group_key, bucket,"
            " value) SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::text[], $5::text[],"
            " $6::int8[], $7::text[]) ON CONFLICT DO NOTHING",
            tenant_id,
            *zip(*ordered, strict=True),
        )
    else:
        await db.executemany(
            "INSERT OR IGNORE INTO rollup_distinct (tenant_id, meter_id, width, subject,"
            " group_key, bucket, value) VALUES (?,?,?,?,?,?,?)",
            [(tenant_id, *row) for row in ordered],
        )


async def append_journal(session: AsyncSession, tenant_id: str, payload: bytes) -> None:
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("INSERT INTO rollup_journal (tenant_id, payload) VALUES ($1, $2)", tenant_id, payload)
    else:
        await db.execute("INSERT INTO rollup_journal (tenant_id, payload) VALUES (?, ?)", (tenant_id, payload))


async def claim_journal(
    session: AsyncSession, limit: int, *, passing: Iterable[int] = ()
) -> list[tuple[int, str, bytes]]:
    """The oldest journal rows, but those in `passing` (rows known not to fold)."""
    db, dialect = await driver(session)
    if dialect == "postgresql":
        rows = await db.fetch(
            "SELECT seq, tenant_id, payload FROM rollup_journal WHERE seq <> ALL($2::int8[])"
            " ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit, list(passing),
        )
    else:
        rows = await db.execute_fetchall(
            "SELECT seq, tenant_id, payload FROM rollup_journal"
            " WHERE seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
            (codec.dumps(list(passing)), limit),
        )
    return [(int(r[0]), r[1], bytes(r[2])) for r in rows]


async def pending_journal(session: AsyncSession, tenant_id: str) -> list[bytes]:
    rows = await fetch(
        session,
        "SELECT payload FROM rollup_journal WHERE tenant_id = $1 ORDER BY seq",
        "SELECT payload FROM rollup_journal WHERE tenant_id = ? ORDER BY seq",
        tenant_id,
    )
    return [bytes(r[0]) for r in rows]


async def lock_tenant_journal(session: AsyncSession, tenant_id: str) -> list[tuple[int, bytes]]:
    """The tenant's journal rows, locked for this transaction (PostgreSQL; SQLite's single
    writer needs no lock): waits for a fold that claimed some of them to commit, and keeps
    later folds off them (their claims skip locked rows)."""
    rows = await fetch(
        session,
        "SELECT seq, payload FROM rollup_journal WHERE tenant_id = $1 ORDER BY seq FOR UPDATE",
        "SELECT seq, payload FROM rollup_journal WHERE tenant_id = ? ORDER BY seq",
        tenant_id,
    )
    return [(int(r[0]), bytes(r[1])) for r in rows]


async def rewrite_journal(session: AsyncSession, rows: list[tuple[int, bytes]]) -> None:
    if not rows:
        return
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.executemany("UPDATE rollup_journal SET payload = $2 WHERE seq = $1", rows)
    else:
        await db.executemany("UPDATE rollup_journal SET payload = ? WHERE seq = ?", [(p, s) for s, p in rows])


async def delete_rollups(session: AsyncSession, tenant_id: str, meter_id: str) -> None:
    """Every rollup cell and distinct value of one meter."""
    for table in ("rollups", "rollup_distinct"):
        await fetch(
            session,
            f"DELETE FROM {table} WHERE tenant_id = $1 AND meter_id = $2",
            f"DELETE FROM {table} WHERE tenant_id = ? AND meter_id = ?",
            tenant_id,
            meter_id,
        )


# What a driver raises for a value its column cannot hold (past 64 bits): the data, not the
# database, is at fault, so trying again cannot help.
UNSTORABLE: tuple[type[Exception], ...] = (OverflowError, asyncpg.exceptions.DataError)


@asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[None]:
    """What runs inside is undone together when it raises, and the transaction goes on."""
    db, _ = await driver(session)
    await db.execute("SAVEPOINT part")
    try:
        yield
    except Exception:
        await db.execute("ROLLBACK TO SAVEPOINT part")
        raise
    await db.execute("RELEASE SAVEPOINT part")


async def delete_journal(session: AsyncSession, seqs: list[int]) -> None:
    if not seqs:
        return
    db, dialect = await driver(session)
    if dialect == "postgresql":
        await db.execute("DELETE FROM rollup_journal WHERE seq = ANY($1::int8[])", seqs)
    else:
        await db.executemany("DELETE FROM rollup_journal WHERE seq = ?", [(s,) for s in seqs])


async def live_meter_ids(session: AsyncSession, tenant_ids: list[str]) -> set[str]:
    db, dialect = await driver(session)
    if dialect == "postgresql":
        rows = await db.fetch(
            "SELECT id FROM meters WHERE tenant_id = ANY($1::text[]) AND deleted_at IS NULL", tenant_ids
        )
    else:
        marks = ",".join("?" * len(tenant_ids))
        rows = await db.execute_fetchall(
            f"SELECT id FROM meters WHERE tenant_id IN ({marks}) AND deleted_at IS NULL", tenant_ids
        )
    return {r[0] for r in rows}
