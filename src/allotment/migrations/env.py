"""Alembic environment: one history for SQLite and PostgreSQL, run on the async drivers."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from allotment.db import Base, async_url
from allotment.migrations import all_models  # noqa: F401  (registers every table)

config = context.config
target_metadata = Base.metadata


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run() -> None:
    engine = create_async_engine(async_url(config.get_main_option("sqlalchemy.url") or ""))
    async with engine.connect() as connection:
        await connection.run_sync(_configure)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `allotment migrate`")
asyncio.run(_run())
