"""Tenants and API keys. Secrets are shown once; only their sha256 is stored."""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import audit
from allotment.errors import NotFound, Unauthenticated, ValidationFailed
from allotment.tenancy.models import ApiKey, Tenant
from allotment.types import new_id

SECRET_PREFIX = "alm_"


class Scope(enum.StrEnum):
    ADMIN = "admin"
    INGEST = "ingest"
    READ = "read"


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scope: Scope


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_tenant(session: AsyncSession, name: str, *, at: datetime) -> Tenant:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed.on("name", "must have 1 to 200 characters")
    tenant = Tenant(id=new_id("ten"), name=name, created_at=at)
    session.add(tenant)
    await session.flush()
    return tenant


async def first_tenant(session: AsyncSession) -> Tenant | None:
    found: Tenant | None = await session.scalar(select(Tenant).order_by(Tenant.id).limit(1))
    return found


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    """Every tenant, oldest first (ids sort by creation)."""
    return list(await session.scalars(select(Tenant).order_by(Tenant.id)))


async def count_tenants(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Tenant)) or 0)


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant", tenant_id)
    return tenant


async def create_key(
    session: AsyncSession, tenant_id: str, *, scope: str, name: str, at: datetime, actor: str = audit.SYSTEM
) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is not stored and cannot be shown again."""
    try:
        scope = Scope(scope)
    except ValueError:
        raise ValidationFailed.on("scope", "must be one of admin, ingest, read") from None
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        scope=scope.value,
        secret_hash=hash_secret(secret),
        hint=secret[:10],
        created_at=at,
    )
    session.add(key)
    await session.flush()
    await _audit(session, key, "api_key.created", None, actor=actor, at=at)
    return key, secret


async def list_keys(
    session: AsyncSession, tenant_id: str, *, after: str | None = None, limit: int | None = None
) -> list[ApiKey]:
    """The tenant's keys in id (creation) order: those after `after`, at most `limit`."""
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(ApiKey.id > after)
    return list(await session.scalars(stmt.order_by(ApiKey.id).limit(limit)))


async def revoke_key(
    session: AsyncSession, tenant_id: str, key_id: str, *, at: datetime, actor: str = audit.SYSTEM
) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.tenant_id != tenant_id:
        raise NotFound("api_key", key_id)
    if key.revoked_at is None:
        before = _key_snapshot(key)
        key.revoked_at = at
        await _audit(session, key, "api_key.revoked", before, actor=actor, at=at)
    forget(key.secret_hash)
    await session.flush()
    return key


def _key_snapshot(key: ApiKey) -> dict[str, Any]:
    """The key as the audit log keeps it: never its secret's hash."""
    return {k: v for k, v in (audit.snapshot(key) or {}).items() if k != "secret_hash"}


async def _audit(session: AsyncSession, key: ApiKey, action: str, before: dict[str, Any] | None, *,
                 actor: str, at: datetime) -> None:
    await audit.record(session, key.tenant_id, actor=actor, action=action, entity_type="api_key",
                       entity_id=key.id, before=before, after=_key_snapshot(key), at=at)


# Verified keys are remembered briefly so the hot paths do not pay a lookup per request:
# digest -> (looked up again from, forgotten at, principal).
_verified: dict[str, tuple[float, float, Principal]] = {}


def forget(secret_hash: str) -> None:
    _verified.pop(secret_hash, None)


def remembered(secret: str) -> tuple[Principal, bool] | None:
    """The principal of a key verified moments ago, and whether it is due to be looked up
    again (past half its time); None: verify it first."""
    cached = _verified.get(hash_secret(secret))
    if cached is None:
        return None
    now = time.monotonic()
    return (cached[2], cached[0] <= now) if now < cached[1] else None


async def verify(session: AsyncSession, secret: str, *, cache_seconds: float) -> Principal:
    """Look the key up, and remember it for `cache_seconds`; a key that fails is forgotten.

    The time bounds how long a key revoked by another process still works here."""
    digest, now = hash_secret(secret), time.monotonic()
    key: ApiKey | None = await session.scalar(select(ApiKey).where(ApiKey.secret_hash == digest))
    if key is None or key.revoked_at is not None:
        forget(digest)
        raise Unauthenticated("the API key is not valid" if key is None else "the API key has been revoked")
    principal = Principal(key.tenant_id, key.id, Scope(key.scope))
    _verified[digest] = (now + cache_seconds / 2, now + cache_seconds, principal)
    return principal
