"""SQLite writers of different processes queue on a file lock the kernel hands over."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from allotment.config import Settings
from allotment.db import Database


def _database(path: Path) -> Database:
    # Each Database opens the lock file itself, as another process would.
    return Database(Settings(database_url=f"sqlite:///{path}"))


async def _write(db: Database, value: int) -> None:
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO marks (v) VALUES (:v)"), {"v": value})


async def _holding(db: Database) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A write transaction of `db` that has written and stays open until the event is set."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO marks (v) VALUES (1)"))
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    return holder, release


async def test_a_writer_waits_for_another_process_writer_and_then_proceeds(tmp_path: Path) -> None:
    """The second writer starts only once the first one committed, and then at once."""
    path = tmp_path / "lock.db"
    first, second = _database(path), _database(path)
    try:
        async with first.transaction() as session:
            await session.execute(text("CREATE TABLE marks (v INTEGER)"))
        holder, release = await _holding(first)
        waiter = asyncio.create_task(_write(second, 2))
        await asyncio.sleep(0.2)
        assert not waiter.done()  # queued behind the holder, not failed or through
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), timeout=10)
        async with second.transaction(readonly=True) as session:
            assert list(await session.scalars(text("SELECT v FROM marks ORDER BY rowid"))) == [1, 2]
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_cancelled_waiter_leaves_the_lock_free(tmp_path: Path) -> None:
    """A writer cancelled while it waits (a client gone) must not take the lock for good."""
    path = tmp_path / "lock.db"
    first, second, third = _database(path), _database(path), _database(path)
    try:
        async with first.transaction() as session:
            await session.execute(text("CREATE TABLE marks (v INTEGER)"))
        holder, release = await _holding(first)
        waiter = asyncio.create_task(_write(second, 2))
        await asyncio.sleep(0.2)
        waiter.cancel()
        release.set()
        await holder
        await asyncio.wait_for(_write(third, 3), timeout=10)
        await asyncio.wait_for(_write(second, 4), timeout=10)
        async with third.transaction(readonly=True) as session:
            assert list(await session.scalars(text("SELECT v FROM marks ORDER BY rowid"))) == [1, 3, 4]
    finally:
        for db in (first, second, third):
            await db.dispose()
