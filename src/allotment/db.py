"""Engines and sessions for both backends.

SQLite runs in WAL mode with one writer at a time: write transactions start with
`BEGIN IMMEDIATE` so that two processes never deadlock upgrading a read lock, while
read-only sessions use a deferred `BEGIN` and never wait for writers. PostgreSQL uses one
engine for both.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import DateTime, Index, MetaData, TypeDecorator, delete, event, select, text, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from allotment.batching import Batcher
from allotment.config import Settings
from allotment.driver_pool import DriverPool
from allotment.errors import Conflict

_MEMO_LIMIT = 100_000  # remembered reads per process, at most
# Seconds a hot-path PostgreSQL connection (and the plans it keeps) lives: a plan made while
# a table was small is made again within minutes of the table growing.
DRIVER_MAX_AGE = 300.0


def async_url(database_url: str) -> str:
    """`sqlite:///x.db` -> aiosqlite, `postgresql://` -> asyncpg; explicit drivers are kept."""
    url = make_url(database_url)
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


BACKENDS = ("sqlite", "postgresql")


def shown_url(database_url: str) -> str:
    """The URL as it may be printed or logged: without its password."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"


def url_problem(database_url: str) -> str | None:
    """Why a DATABASE_URL names no database Allotment can use, or None when it does.
    The URL itself is not repeated: it may hold a password."""
    try:
        backend: str | None = make_url(database_url).get_backend_name()
    except ArgumentError:
        backend = None
    if backend in BACKENDS:
        return None
    scheme = database_url.split("://", 1)[0] if "://" in database_url else None
    found = f" (it names {scheme!r})" if scheme and scheme.isascii() and len(scheme) < 40 else ""
    return f"DATABASE_URL must be a sqlite:/// or a postgresql:// URL{found}"


def database_problem(exc: BaseException) -> str:
    """One line saying why the database could not be used, in the driver's own words."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _sqlite_engine(url: str, *, synchronous: str, immediate: bool) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA wal_autocheckpoint=20000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class WriterLock:
    """One SQLite writer across processes, handed over by the kernel (an exclusive `flock`).

    SQLite's busy handler polls its lock in growing sleeps, up to 100 ms: with two processes
    writing, a waiter often sleeps on long after the lock was freed, which made throughput
    uneven and p99 latencies of hundreds of milliseconds. A `flock` waiter wakes as soon as
    the holder lets go (or dies: the kernel drops the locks of a dead process). It sits beside
    the database file; a database without a file (in memory) needs none.
    """

    def __init__(self, database_path: str | None) -> None:
        in_memory = not database_path or database_path == ":memory:" or database_path.startswith("file::memory:")
        self._path = None if in_memory else f"{database_path}.writer-lock"
        self._fd: int | None = None

    async def __aenter__(self) -> None:
        if self._path is None:
            return
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fd = self._fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waiting = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:  # the thread still takes the lock: give it back then
            def give_back(taken: asyncio.Future[None]) -> None:
                if not taken.cancelled() and taken.exception() is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

            waiting.add_done_callback(give_back)
            raise

    async def __aexit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """The process's connection to the system of record."""

    def __init__(self, settings: Settings) -> None:
        url = async_url(settings.database_url)
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        if self.dialect == "sqlite":
            sync = settings.sqlite_synchronous
            self.engine = _sqlite_engine(url, synchronous=sync, immediate=True)
            self.read_engine = _sqlite_engine(url, synchronous=sync, immediate=False)
        else:
            # 20 connections a process (16, and 4 for the hot paths' raw statements), kept open:
            # PostgreSQL gains nothing from more than a few per core, several processes must
            # fit its max_connections (100 by default), and connections opened for a burst and
            # closed after it cost more than waiting.
            self.engine = create_async_engine(url, pool_size=16, max_overflow=0)
            self._driver_pool = DriverPool(self._connect_driver, size=4, max_age=DRIVER_MAX_AGE)
            # Reads span several statements (rollups, then the journal): one snapshot for all.
            self.read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._sqlite_writer = asyncio.Lock()
        self._writers = WriterLock(make_url(url).database if self.dialect == "sqlite" else None)
        self._reader: sqlite3.Connection | None = None
        self._memo: dict[Any, Any] = {}
        self._memo_version = -1
        self._memo_checked = False
        self._batchers: dict[str, Batcher[Any, Any]] = {}
        self._write = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block succeeds, rolls back when it raises."""
        if readonly or not self.is_sqlite:
            async with self._unit(self._read if readonly else self._write) as session:
                yield session
            return
        # SQLite has one writer. Writers queue here, in order, instead of polling the database
        # lock (whose busy handler sleeps in growing steps): those of this process on an
        # asyncio lock, then one per process on a file lock that the kernel hands over.
        async with self._sqlite_writer, self._writers, self._unit(self._write) as session:
            yield session

    @asynccontextmanager
    async def _unit(self, maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
        async with maker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def driver_transaction(self) -> AsyncIterator[Any]:
        """A PostgreSQL driver connection in a transaction of its own: commits when the block
        succeeds, rolls back when it raises. For hot paths whose statements are all raw."""
        async with self._driver_pool.connection() as connection, connection.transaction():
            yield connection

    async def statement_alone(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one PostgreSQL statement that is its own transaction (autocommit):
        committed, and durable, when this returns. Never sent twice: a write must not be."""
        async with self._driver_pool.connection() as connection:
            return list(await connection.fetch(sql, *args))

    async def point_read(self, sql_pg: str, sql_sqlite: str, *args: Any) -> list[Any]:
        """One read statement outside any transaction, on the cheapest path of each backend.

        For hot reads of a few rows by key (a check). On SQLite the statement runs on this
        process's own connection in the calling thread: an indexed read takes microseconds,
        less than handing it to a driver thread, and WAL readers never wait for writers. On
        PostgreSQL it is one round trip on a raw connection, with no BEGIN or COMMIT.
        """
        if self.is_sqlite:
            return self._sqlite_reader().execute(sql_sqlite, args).fetchall()
        return await self._driver_pool.fetch(sql_pg, *args)

    async def _connect_driver(self) -> Any:
        """A raw connection made as the engine makes its own (same URL, same options).

        Statements on these are key lookups and conditional updates whose best plan never
        depends on the values: a generic plan, planned once per connection, saves replanning
        on every execution (PostgreSQL keeps choosing custom plans for them, at about 0.3 ms
        each). That plan lives as long as the connection, made from the statistics and table
        sizes of its first use: a table still empty then (a fresh database) got a sequential
        scan, kept as it grew. Every statement here finds its rows by an index, so sequential
        scans are ruled out on these connections; and a connection retires after
        DRIVER_MAX_AGE, so a plan made while the tables were small (where any index costs
        the same) is made again once they have grown. Ruling them out prices a read of a table
        without a usable index (a tenant's plans and features, for the catalogue's stamp) past
        JIT's thresholds: compiling it took 200-350 ms on every execution, for a read of
        microseconds, so JIT is off here too."""
        dialect = self.engine.sync_engine.dialect
        _, options = dialect.create_connect_args(self.engine.sync_engine.url)
        options.pop("prepared_statement_name_func", None)
        cache = options.pop("prepared_statement_cache_size", 100)
        settings = {**options.pop("server_settings", {}), "plan_cache_mode": "force_generic_plan",
                    "enable_seqscan": "off", "jit": "off"}
        return await asyncpg.connect(**options, statement_cache_size=cache, server_settings=settings)

    def batcher(self, name: str, make: Callable[[], Batcher[Any, Any]]) -> Batcher[Any, Any]:
        """This database's batcher called `name`, made by `make` on first use."""
        found = self._batchers.get(name)
        if found is None:
            found = self._batchers[name] = make()
        return found

    def read_memo(self) -> dict[Any, Any] | None:
        """A dict for remembering reads, emptied whenever anyone has committed since (SQLite).

        SQLite's data version changes with every commit by any connection of any process,
        and reading it touches only the shared WAL index (no file read), so what was read
        after the version last stayed put is exactly what a new read would return. None on
        PostgreSQL, which offers nothing as cheap: there every read is a round trip.

        The version is read once per turn of the event loop. Every request served in a
        turn arrived before the turn began, so before the version was read: whatever was
        committed before a client sent its request is seen by it.
        """
        if not self.is_sqlite:
            return None
        if not self._memo_checked:
            version = self._sqlite_reader().execute("PRAGMA data_version").fetchone()[0]
            if version != self._memo_version or len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
                self._memo_version = version
            self._memo_checked = True
            asyncio.get_running_loop().call_soon(self._memo_turn_over)
        return self._memo

    def _memo_turn_over(self) -> None:
        self._memo_checked = False

    def _sqlite_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            path = make_url(self.url).database
            reader = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            reader.execute("PRAGMA busy_timeout=5000")
            self._reader = reader
        return self._reader

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.is_sqlite:
            await self.read_engine.dispose()
        else:
            await self._driver_pool.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._writers.close()


# --- the driver connection, for hot-path SQL that skips statement compilation ---------------


async def driver(session: AsyncSession) -> tuple[Any, str]:
    """The raw driver connection inside the session's transaction, and its dialect name.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first own statement; a statement
    sent on the raw connection before that would run in autocommit, outside the transaction
    (and its locks would be released at once). So the first call per session makes SQLAlchemy
    open the transaction.
    """
    conn = await session.connection()
    if conn.dialect.name == "postgresql" and not session.info.get("driver_in_transaction"):
        await conn.exec_driver_sql("SELECT 1")
        session.info["driver_in_transaction"] = True
    raw = await conn.get_raw_connection()
    return raw.driver_connection, conn.dialect.name


async def fetch_opening(session: AsyncSession, sql_pg: str, *args: Any) -> list[Any]:
    """Run a PostgreSQL statement that may be the first of the session's transaction.

    When it is, it goes through SQLAlchemy, which opens the transaction with it: `driver()`
    would first spend a round trip on `SELECT 1`. Later statements take the driver directly.
    """
    if session.info.get("driver_in_transaction"):
        db, _ = await driver(session)
        return list(await db.fetch(sql_pg, *args))
    conn = await session.connection()
    result = await conn.exec_driver_sql(sql_pg, tuple(args))
    session.info["driver_in_transaction"] = True
    return list(result.all())


async def fetch(session: AsyncSession, sql_pg: str, sql_sqlite: str, *args: Any) -> list[Any]:
    """Run a read on the driver connection with the dialect's own placeholders."""
    db, dialect = await driver(session)
    if dialect == "postgresql":
        return list(await db.fetch(sql_pg, *args))
    return list(await db.execute_fetchall(sql_sqlite, args))


# --- declarative base shared by every domain's models ----------------------------------------

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


async def flush_unique(session: AsyncSession, conflict: Conflict) -> None:
    """Flush, with the unique keys as the last word on races between processes: services check
    for duplicates first to give a clear message, but two concurrent requests can both pass
    that check on PostgreSQL, and then a unique index refuses the second. That is `conflict`
    (which the caller can retry), not a server error."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise conflict from exc


async def delete_oldest(
    session: AsyncSession, model: type[Base], *, keys: tuple[Any, ...], created: Any, before: datetime, limit: int
) -> int:
    """Delete at most `limit` rows of `model` whose `created` is before `before`, oldest first,
    by their primary `keys`; returns how many. Bounded so that a backlog is worked off in
    short transactions."""
    oldest = select(*keys).where(created < before).order_by(created).limit(limit)
    result = await session.execute(delete(model).where(tuple_(*keys).in_(oldest)))
    return int(result.rowcount)  # type: ignore[attr-defined]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in and out on both backends (SQLite would hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def unique_key_while_live(table: str, *, retired_column: str) -> Index:
    """(tenant_id, key) unique among rows not retired: a deleted or archived key may be reused.

    A partial index, which SQLite and PostgreSQL both support with the same predicate.
    """
    live = text(f"{retired_column} IS NULL")
    return Index(f"uq_{table}_tenant_key_live", "tenant_id", "key", unique=True,
                 sqlite_where=live, postgresql_where=live)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
