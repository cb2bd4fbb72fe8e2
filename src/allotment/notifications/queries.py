"""Dialect-specific SQL of the outbox (everything else is portable SQLAlchemy)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database, driver
from allotment.notifications.models import Delivery

_INSERT = (
    "INSERT INTO notifications (id, tenant_id, type, dedupe_key, customer_id, endpoint_id,"
    " rule_id, payload, created_at) VALUES {} ON CONFLICT (tenant_id, dedupe_key) DO NOTHING"
)
_COLUMNS = 9
_ROWS = 500  # per statement: well under both databases' limits of bound parameters

# Any constant: it names the one lock that serialises fan-out across workers.
_FAN_OUT_LOCK = 0x616C6C6F746D6E74


def _sqlite_time(at: datetime) -> str:
    """The text SQLAlchemy stores for a DateTime on SQLite (naive UTC, microseconds)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def insert_notifications(session: AsyncSession, rows: list[tuple[Any, ...]]) -> int:
    """Insert outbox rows in their order, skipping taken dedupe keys; returns how many were new.

    On the driver connection: this runs inside ingest and check. The last column is the
    creation time.
    """
    db, dialect = await driver(session)
    inserted = 0
    for i in range(0, len(rows), _ROWS):
        chunk = rows[i:i + _ROWS]
        if dialect == "postgresql":
            values = ", ".join(
                "(" + ", ".join(f"${r * _COLUMNS + c + 1}" for c in range(_COLUMNS)) + ")" for r in range(len(chunk))
            )
            status: str = await db.execute(_INSERT.format(values), *(v for row in chunk for v in row))
            inserted += int(status.rsplit(" ", 1)[1])
            continue
        values = ", ".join(["(" + ", ".join("?" * _COLUMNS) + ")"] * len(chunk))
        cursor = await db.execute(
            _INSERT.format(values), [v for row in chunk for v in (*row[:-1], _sqlite_time(row[-1]))]
        )
        inserted += cursor.rowcount
        await cursor.close()
    return inserted


async def try_fan_out_lock(session: AsyncSession) -> bool:
    """One fan-out at a time, so deliveries are created in emission order (SQLite: always)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _FAN_OUT_LOCK})
    return bool(got)



async def insert_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert, skipping (notification, endpoint) pairs that exist (a replay may come first)."""
    dialect = session.get_bind().dialect.name
    stmt = pg_insert(Delivery) if dialect == "postgresql" else sqlite_insert(Delivery)
    await session.execute(
        stmt.on_conflict_do_nothing(index_elements=["notification_seq", "endpoint_id"]), rows
    )


_ANYTHING_DUE = (
    "SELECT EXISTS (SELECT 1 FROM notifications WHERE fanned_out_at IS NULL)"
    " OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= {})"
)


async def anything_due(db: Database, *, at: datetime) -> bool:
    """Whether a delivery round has work: one read on two partial indexes, no transaction.

    An idle worker asks this several times a second; opening write transactions to find
    nothing would take SQLite's single write lock from ingest and checks each time.
    """
    rows = await db.point_read(
        _ANYTHING_DUE.format("$1"), _ANYTHING_DUE.format("?"), at if not db.is_sqlite else _sqlite_time(at)
    )
    return bool(rows[0][0])
