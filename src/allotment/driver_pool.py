"""A few raw PostgreSQL driver connections for the hot paths, lent without resetting them.

The general pools do real work on every loan: SQLAlchemy's checkout and checkin run events
and bookkeeping in Python, and asyncpg's own pool resets a connection on release with a
round trip. A check's batched read costs less than either. What is lent here runs single
statements outside transactions, or transactions that end inside the loan, so a connection
comes back with nothing to reset. One that might hold something (a cancelled statement, a
transaction still open) is closed instead of lent again; one the server dropped is replaced.

A connection also retires after `max_age` seconds: the plans PostgreSQL keeps for its
statements were made from the tables as they were when it first ran them, and a table that
has grown since may deserve another plan; a new connection plans again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any


class DriverPool:
    """At most `size` connections made by `connect`, opened on demand, each kept open for up to
    `max_age` seconds (by `clock`)."""

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], *, size: int, max_age: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect, self._size, self._max_age, self._clock = connect, size, max_age, clock
        self._born: dict[int, float] = {}  # id(connection) -> when it was opened
        self._retiring: set[asyncio.Task[None]] = set()
        self._idle: list[Any] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self._take()
        clean = False
        try:
            yield conn
            clean = True
        except Exception:
            clean = not conn.is_in_transaction()
            raise
        finally:  # a cancellation (BaseException) leaves `clean` False: the statement may run on
            self._give_back(conn, clean=clean)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one read statement, outside any transaction.

        A connection the server dropped while it was idle (a restart, an idle timeout) is
        noticed only when a statement fails on it: the read is then sent once more on a new
        one, which is safe for a read and spares the caller a failure it did not cause.
        """
        async with self.connection() as conn:
            try:
                return list(await conn.fetch(sql, *args))
            except Exception:
                if not conn.is_closed():
                    raise
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            self._born.pop(id(conn), None)
            await conn.close(timeout=5)
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _take(self) -> Any:
        while True:
            while self._idle:
                conn = self._idle.pop()  # the most recently used: its server process is warm
                if not conn.is_closed() and self._young(conn):
                    return conn
                self._drop(conn, gently=not conn.is_closed())
            if self._open < self._size:
                self._open += 1
                try:
                    conn = await self._connect()
                    self._born[id(conn)] = self._clock()
                    return conn
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            await self._wait()

    async def _wait(self) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._wake_one()  # woken, then cancelled: the turn goes to the next in line
            raise

    def _give_back(self, conn: Any, *, clean: bool) -> None:
        if clean and self._young(conn) and not self._closed and not conn.is_closed():
            self._idle.append(conn)
        else:
            self._drop(conn, gently=clean and not conn.is_closed())
        self._wake_one()

    def _young(self, conn: Any) -> bool:
        return self._clock() - self._born.get(id(conn), float("-inf")) < self._max_age

    def _drop(self, conn: Any, *, gently: bool) -> None:
        """Stop counting `conn`; a clean one (retired by age) says goodbye to the server."""
        self._open -= 1
        self._born.pop(id(conn), None)
        if gently:
            task = asyncio.get_running_loop().create_task(conn.close(timeout=5))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        else:
            conn.terminate()

    def _wake_one(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
