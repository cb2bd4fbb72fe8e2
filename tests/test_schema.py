"""The models and the migrations describe one schema, on both backends."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from allotment.db import Base, async_url
from allotment.migrations import all_models  # noqa: F401  (every domain's tables on Base)


async def test_the_migrated_schema_is_what_the_models_declare(database_url):
    """A column, index or constraint added to a model without a migration (or the reverse)
    shows here, before it shows as a slow query or a failed insert in production."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            with warnings.catch_warnings():
                # SQLite cannot reflect the expression index of the event log (by minute).
                warnings.filterwarnings("ignore", message=".*expression-based index")
                diff = await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
                )
    finally:
        await engine.dispose()
    assert diff == []
