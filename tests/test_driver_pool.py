"""The raw connections of the hot paths are reused, replaced when spoiled, and never shared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from allotment.driver_pool import DriverPool
from tests.conftest import _admin_dsn, run_blocking


@pytest.fixture
async def pool(postgres_database: str) -> AsyncIterator[DriverPool]:
    dsn = _admin_dsn(postgres_database)

    async def connect() -> Any:
        return await asyncpg.connect(dsn)

    made = DriverPool(connect, size=2)
    yield made
    await made.close()


async def _backend(pool: DriverPool) -> int:
    async with pool.connection() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_returned_connection_is_lent_again(pool: DriverPool) -> None:
    """Consecutive loans use the same server process: nothing is opened per statement."""
    assert await _backend(pool) == await _backend(pool)


async def test_no_more_than_size_connections_and_waiters_are_served(pool: DriverPool) -> None:
    """A third borrower waits for one of two busy connections, then gets it."""
    release = asyncio.Event()
    seen: list[int] = []

    async def hold() -> None:
        async with pool.connection() as conn:
            seen.append(await conn.fetchval("SELECT pg_backend_pid()"))
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    while len(seen) < 2:
        await asyncio.sleep(0.01)
    third = asyncio.create_task(_backend(pool))
    await asyncio.sleep(0.1)
    assert not third.done()
    release.set()
    assert await asyncio.wait_for(third, timeout=10) in seen
    await asyncio.gather(*holders)


async def test_a_failed_statement_keeps_the_connection(pool: DriverPool) -> None:
    """An error that rolled its transaction back leaves the connection clean for the next loan."""
    first = await _backend(pool)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT 1 / 0")
    assert await _backend(pool) == first


async def test_a_cancelled_statement_spoils_the_connection(pool: DriverPool) -> None:
    """A loan cancelled mid-statement is closed, not lent to the next caller."""
    first = await _backend(pool)

    async def slow() -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_sleep(5)")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _backend(pool) != first


async def test_a_read_on_a_connection_the_server_dropped_is_sent_again(
    pool: DriverPool, postgres_database: str
) -> None:
    """After the server ends an idle connection, the next read still answers, on a new one."""
    first = await _backend(pool)

    async def terminate() -> bool:
        admin = await asyncpg.connect(_admin_dsn(postgres_database))
        try:
            return bool(await admin.fetchval("SELECT pg_terminate_backend($1)", first))
        finally:
            await admin.close()

    # From another thread, blocking this loop: the pool cannot have noticed before the read.
    assert run_blocking(terminate())
    rows = await pool.fetch("SELECT pg_backend_pid()")
    assert rows[0][0] != first


async def test_a_connection_past_its_age_is_closed_instead_of_lent_again(postgres_database: str) -> None:
    """Its plans were made from the tables as they were: a new connection plans again."""
    dsn, now = _admin_dsn(postgres_database), [0.0]

    async def connect() -> Any:
        return await asyncpg.connect(dsn)

    aging = DriverPool(connect, size=2, max_age=300, clock=lambda: now[0])
    try:
        first = await _backend(aging)
        now[0] = 299
        assert await _backend(aging) == first
        now[0] = 301
        second = await _backend(aging)
        assert second != first and await _backend(aging) == second
    finally:
        await aging.close()
