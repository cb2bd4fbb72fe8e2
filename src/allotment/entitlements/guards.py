"""Unique keys as the last word on races between processes.

Services check for duplicates first to give a clear message; two concurrent requests can
both pass that check on PostgreSQL, and then the unique index refuses the second. That is a
conflict the caller can retry, not a server error.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.errors import Conflict


async def flush_unique(session: AsyncSession, conflict: Conflict) -> None:
    """Flush; a unique key violated by a concurrent writer is raised as `conflict`."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise conflict from exc
