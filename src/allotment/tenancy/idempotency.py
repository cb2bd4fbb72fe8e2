"""Stored answers to requests sent with an `Idempotency-Key` (see api/idempotency.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import delete_oldest
from allotment.tenancy.models import IdempotentRequest


async def lock(session: AsyncSession, tenant_id: str, key: str) -> None:
    """Serialise requests carrying the same key (SQLite's single writer already does)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 11))"),
            {"k": f"{tenant_id}\n{key}"},
        )


async def find(session: AsyncSession, tenant_id: str, key: str) -> IdempotentRequest | None:
    found: IdempotentRequest | None = await session.scalar(
        select(IdempotentRequest).where(
            IdempotentRequest.tenant_id == tenant_id, IdempotentRequest.key == key
        )
    )
    return found


async def remember(
    session: AsyncSession,
    tenant_id: str,
    key: str,
    *,
    fingerprint: str,
    status_code: int,
    body: bytes,
    at: datetime,
) -> None:
    session.add(
        IdempotentRequest(
            tenant_id=tenant_id, key=key, fingerprint=fingerprint,
            status_code=status_code, body=body, created_at=at,
        )
    )
    await session.flush()


async def forget(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Drop at most `limit` stored answers given before `before`; returns how many."""
    m = IdempotentRequest
    return await delete_oldest(session, m, keys=(m.tenant_id, m.key), created=m.created_at, before=before, limit=limit)
