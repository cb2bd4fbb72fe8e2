"""API keys of the caller's tenant (`/v1/api-keys`).

A key's secret is shown once, in the answer that created it; only its hash is stored. A
retried create (same `Idempotency-Key`, same body) creates no second key: it names the first
with `secret: null`, since that secret exists nowhere any more (docs/api-keys.md).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from allotment.api.deps import Admin, Cursor, Limit, ReadSession, WriteSession, decode_cursor, page
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.tenancy import service
from allotment.tenancy.models import ApiKey
from allotment.tenancy.service import Scope
from allotment.types import utcnow

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])
_LIST = "/v1/api-keys"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field (say, an expiry) must not pass unnoticed

    name: str = Field(default="api key", min_length=1, max_length=200)
    scope: Scope


class KeyRead(BaseModel):
    id: str
    name: str
    scope: Scope
    hint: str = Field(description="The first characters of the secret, to recognise it.")
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    secret: str | None = Field(description=(
        "Shown once, in the answer that created the key; only a hash is stored. null when the "
        "answer replays that one (`Idempotent-Replayed: true`): the secret cannot be shown again. "
        "If it was lost, revoke the key and create another."
    ))


def key_read(key: ApiKey) -> KeyRead:
    return KeyRead.model_validate(key, from_attributes=True)


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(data: KeyCreate, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Create a key; the answer is the only place its secret is ever shown.

    A retry with the same `Idempotency-Key` and body creates no second key: it answers 201 with
    the first key and `secret: null` (`Idempotent-Replayed: true`), because only the secret's
    hash is kept. The same key with another body is a 409.
    """
    key, secret = await service.create_key(session, principal.tenant_id, scope=data.scope, name=data.name, actor=principal.key_id, at=utcnow())
    read = key_read(key).model_dump()
    return await idem.respond(201, KeyCreated(**read, secret=secret), replayed_as=KeyCreated(**read, secret=None))


@router.get("", response_model=Page[KeyRead])
async def list_keys(principal: Admin, session: ReadSession, limit: Limit = 50, cursor: Cursor = None) -> dict[str, object]:
    """The tenant's keys, oldest first, revoked ones included; never their secrets."""
    rows = await service.list_keys(session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit)
    return page([key_read(k) for k in rows], rows, limit=limit, position=lambda k: k.id, of=_LIST)


@router.post("/{key_id}/revoke", response_model=KeyRead)
async def revoke_key(key_id: str, principal: Admin, session: WriteSession) -> KeyRead:
    return key_read(await service.revoke_key(session, principal.tenant_id, key_id, actor=principal.key_id, at=utcnow()))
