"""Every database test runs on SQLite and on PostgreSQL, on a schema built by the migrations.

PostgreSQL is required: when it cannot be reached the run fails with the reason, unless
ALLOTMENT_TEST_BACKENDS explicitly leaves it out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database
from allotment.migrate import upgrade
from allotment.tenancy import service as tenancy
from allotment.types import utcnow

POSTGRES_URL = os.environ.get(
    "ALLOTMENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
T = TypeVar("T")
BACKENDS = [b.strip() for b in os.environ.get("ALLOTMENT_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("backends")  # a behaviour of one backend only
        backends = [b for b in BACKENDS if only is None or b in only.args]
        metafunc.parametrize("backend", backends, scope="session")


@dataclass
class Backend:
    name: str
    template: str  # a migrated database to start each test from


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin_execute(sql: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(POSTGRES_URL), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway database on the server, migrated once per run, dropped at the end."""
    yield from migrated_postgres_database()


def migrated_postgres_database() -> Iterator[str]:
    """Create and migrate a database of its own; yield its URL; drop it afterwards."""
    name = f"allotment_test_{uuid.uuid4().hex[:10]}"
    try:
        run_blocking(_admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for the test suite and is not reachable at {POSTGRES_URL}: {exc}",
            pytrace=False,
        )
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    run_blocking(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_TABLES: list[str] = []


async def truncate(url: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(url))
    try:
        if not _TABLES:
            rows = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
            _TABLES.extend(r[0] for r in rows)
        await conn.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated, empty database for one test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "allotment.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    run_blocking(truncate(url))
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, key_cache_seconds=0.0)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    yield database
    await database.dispose()


@dataclass
class Tenant:
    id: str
    admin: str
    client: httpx.AsyncClient

    async def key(self, scope: str, db: Database) -> str:
        async with db.transaction() as session:
            _, secret = await tenancy.create_key(session, self.id, scope=scope, name=scope, at=utcnow())
        return secret


async def make_tenant(db: Database, app: object, name: str) -> Tenant:
    async with db.transaction() as session:
        tenant = await tenancy.create_tenant(session, name, at=utcnow())
        _, secret = await tenancy.create_key(session, tenant.id, scope="admin", name="admin", at=utcnow())
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://allotment.test",
        headers={"Authorization": f"Bearer {secret}"},
    )
    return Tenant(tenant.id, secret, client)


@pytest.fixture
def app(settings: Settings, db: Database) -> object:
    return create_app(settings, db=db)


@pytest.fixture
async def tenant(db: Database, app: object) -> AsyncIterator[Tenant]:
    """A tenant with an admin key, and an HTTP client that sends it."""
    t = await make_tenant(db, app, "acme-vendor")
    yield t
    await t.client.aclose()


@pytest.fixture
async def other_tenant(db: Database, app: object) -> AsyncIterator[Tenant]:
    t = await make_tenant(db, app, "other-vendor")
    yield t
    await t.client.aclose()


@pytest.fixture
def anon(app: object) -> Iterator[httpx.AsyncClient]:
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://allotment.test")  # type: ignore[arg-type]
