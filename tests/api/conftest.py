"""One realistic catalogue per backend, shared by the convention tests that walk every operation.

Building it takes a few hundred requests, so it is built once per run and backend on a
database of its own; the tests that use it only add to it (each creates what it consumes).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.api import native
from tests.conftest import Tenant, make_tenant, migrated_postgres_database

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database


@dataclass
class World:
    tenant: Tenant
    catalogue: native.Catalogue
    db: Database


@pytest.fixture(scope="session")
async def world(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    databases = None
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("world") / "allotment.db"
        shutil.copy(template, path)
        url = f"sqlite:///{path}"
    else:
        databases = migrated_postgres_database()
        url = next(databases)
    settings = Settings(database_url=url, key_cache_seconds=0.0)
    db = Database(settings)
    tenant = await make_tenant(db, create_app(settings, db=db), "conventions")
    try:
        yield World(tenant, await native.build(tenant.client, db), db)
    finally:
        await tenant.client.aclose()
        await db.dispose()
        if databases is not None:
            next(databases, None)
