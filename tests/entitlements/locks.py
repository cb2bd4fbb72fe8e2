"""Waiting, in tests, for statements of other transactions to queue on a lock (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg


async def waiting(conn: asyncpg.Connection, count: int) -> bool:
    """At least `count` statements of this database wait for a lock (read outside any
    transaction: inside one, PostgreSQL answers from a snapshot of the first read)."""
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    return int(found) >= count


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition` until it holds (the other transactions are on their way there)."""
    for _ in range(1000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")
