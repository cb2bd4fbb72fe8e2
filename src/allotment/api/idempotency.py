"""`Idempotency-Key` on requests that create or act (API conventions).

A retry with the same key and the same request (method, path and body) gets the first answer
again, marked `Idempotent-Replayed: true`; the same key with another request, another path
included, is a 409. The answer is stored in the same transaction as what the request did, so
an action and its key are committed together or not at all; concurrent requests with one key
are serialised by the key itself. Refusals are not stored: a corrected retry may use the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.deps import Admin, Ingester, WriteSession
from allotment.db import Database
from allotment.errors import IdempotencyConflict, ValidationFailed
from allotment.tenancy import idempotency as store
from allotment.types import utcnow

HEADER = "Idempotency-Key"
KEY_SCHEMA: dict[str, object] = {"type": "string", "minLength": 1, "maxLength": 255}
"""What a key may be, as the OpenAPI document states it (`one_idempotency_key` and `begin` check it)."""


class Replayed(Exception):
    """The stored first answer, to be sent as it was (the retry's transaction rolls back)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__("replayed")
        self.status_code = status_code
        self.body = body


def replay(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replayed)
    return Response(
        exc.body, status_code=exc.status_code, media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


@dataclass
class Idempotency:
    session: AsyncSession
    tenant_id: str
    key: str | None
    fingerprint: str

    async def respond(self, status_code: int, payload: BaseModel, *, replayed_as: BaseModel | None = None) -> Response:
        """The endpoint's answer, remembered under the request's key when it has one.

        `replayed_as` is what retries get instead, when the answer holds what must not be
        stored (a secret shown once)."""
        body = payload.model_dump_json().encode()
        if self.key is not None:
            stored = body if replayed_as is None else replayed_as.model_dump_json().encode()
            await store.remember(
                self.session, self.tenant_id, self.key, fingerprint=self.fingerprint,
                status_code=status_code, body=stored, at=utcnow(),
            )
        return Response(body, status_code=status_code, media_type="application/json")


def one_idempotency_key(in_body: str | None, in_header: str | None) -> str | None:
    """The request's idempotency key, from its body or its header; both may be given only
    when they agree, and the header (the body's field has its own schema) must be usable."""
    if in_header is not None and not 1 <= len(in_header) <= 255:
        raise ValidationFailed.on(HEADER, "must be 1 to 255 characters")
    if in_body is not None and in_header is not None and in_body != in_header:
        raise ValidationFailed.on("idempotency_key", "differs from the Idempotency-Key header")
    return in_body if in_body is not None else in_header


KeyHeader = Annotated[str | None, Header(
    alias=HEADER, description="A retry with the same key and request gets the first answer again "
    "(`Idempotent-Replayed: true`); the same key with another request is a 409.")]


async def begin(session: AsyncSession, tenant_id: str, request: Request, key: str | None) -> Idempotency:
    """In the request's transaction, before it acts: raise the stored first answer
    (`Replayed`) or a 409 for a key used with another request; else what to answer with."""
    if key is None:
        return Idempotency(session, tenant_id, None, "")
    if not 1 <= len(key) <= 255:
        raise ValidationFailed.on(HEADER, "must be 1 to 255 characters")
    fingerprint = await _fingerprint(request)
    await store.lock(session, tenant_id, key)
    stored = await store.find(session, tenant_id, key)
    if stored is None:
        return Idempotency(session, tenant_id, key, fingerprint)
    if stored.fingerprint != fingerprint:
        raise IdempotencyConflict(f"{HEADER} '{key}' was already used for a different request")
    raise Replayed(stored.status_code, stored.body)


async def replay_decision(session: AsyncSession, tenant_id: str, key: str, fingerprint: str) -> None:
    """For a request its domain keys itself (a reservation: the hold it made answers its
    retries), the answer it gave without making anything (a refusal) is kept here, under the
    domain's own `fingerprint` of what the request means: raise it (`Replayed`), or a 409 for
    the key used with another request. Locks the key for the rest of the transaction, so
    that concurrent retries decide once."""
    await store.lock(session, tenant_id, key)
    stored = await store.find(session, tenant_id, key)
    if stored is None:
        return
    if stored.fingerprint != fingerprint:
        raise IdempotencyConflict(f"idempotency key '{key}' was already used for a different request")
    raise Replayed(stored.status_code, stored.body)


async def remember_decision(
    session: AsyncSession, tenant_id: str, key: str, fingerprint: str, status_code: int, body: bytes
) -> None:
    """Keep the answer `replay_decision` gives the request's retries."""
    await store.remember(session, tenant_id, key, fingerprint=fingerprint, status_code=status_code, body=body,
                         at=utcnow())


async def _admin_idempotency(
    request: Request, principal: Admin, session: WriteSession, key: KeyHeader = None
) -> Idempotency:
    return await begin(session, principal.tenant_id, request, key)


async def _ingest_idempotency(
    request: Request, principal: Ingester, session: WriteSession, key: KeyHeader = None
) -> Idempotency:
    return await begin(session, principal.tenant_id, request, key)


async def answered(db: Database, tenant_id: str, request: Request) -> tuple[str, str] | None:
    """For a request whose work is idempotent by itself (ingest: events count once by their
    source and id), outside its transaction: raise the stored first answer (`Replayed`) or a
    409 for a key used with another request. Returns (key, fingerprint) to remember the
    answer under (`remember_answer`), None without a key."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise ValidationFailed.on(HEADER, "must be 1 to 255 characters")
    fingerprint = await _fingerprint(request)
    async with db.transaction(readonly=True) as session:
        stored = await store.find(session, tenant_id, key)
    if stored is None:
        return key, fingerprint
    if stored.fingerprint != fingerprint:
        raise IdempotencyConflict(f"{HEADER} '{key}' was already used for a different request")
    raise Replayed(stored.status_code, stored.body)


async def remember_answer(
    db: Database, tenant_id: str, keyed: tuple[str, str], status_code: int, body: bytes
) -> None:
    """Keep the first answer; a concurrent request with the same key that kept its own first
    did the same work (and counted nothing twice), so that one stands."""
    key, fingerprint = keyed
    try:
        async with db.transaction() as session:
            await store.remember(session, tenant_id, key, fingerprint=fingerprint, status_code=status_code,
                                 body=body, at=utcnow())
    except IntegrityError:
        pass


async def _fingerprint(request: Request) -> str:
    return hashlib.sha256(
        f"{request.method} {request.url.path}\n".encode() + _canonical(await request.body())
    ).hexdigest()


def _canonical(body: bytes) -> bytes:
    """The body as it means: JSON with its keys sorted and no spaces, so a retry serialised
    by another client library is the same request. Anything else, byte for byte."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, TypeError):
        return body


Idempotent = Annotated[Idempotency, Depends(_admin_idempotency)]
"""For admin endpoints; shares the endpoint's `WriteSession` and `Admin` principal."""
IngestIdempotent = Annotated[Idempotency, Depends(_ingest_idempotency)]
"""For endpoints an ingest key may call (usage: seats, reservations)."""
