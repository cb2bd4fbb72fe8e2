"""Seats (`/v1/customers/{key}/seats/{feature}/activate|heartbeat|release`) and who holds
them (`GET /v1/customers/{key}/seats/{feature}`).

An `ingest` or `admin` key is required to act: these calls change what the customer uses. Each
takes an `Idempotency-Key`: a retry of the same call gets its first answer again, and the key
sent with another item or to another action is a 409. Any key may list the holders: the
backend that activates seats needs to see them as much as a dashboard does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from allotment.api.deps import (
    AnyKey,
    Cursor,
    Ingester,
    Limit,
    ReadSession,
    WriteSession,
    bad_cursor,
    decode_pair_cursor,
    page,
    pair_position,
)
from allotment.api.idempotency import IngestIdempotent
from allotment.api.pages import Page
from allotment.entitlements import seats as service
from allotment.entitlements.schemas import QuantityOut, SeatHolderRead
from allotment.types import from_micros, to_micros, utcnow

_LIST = "/v1/customers/{customer_key}/seats/{feature_key}"
router = APIRouter(prefix=_LIST, tags=["seats"])


class SeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt lease length must not pass unnoticed

    item: str = Field(min_length=1, max_length=255, description="The item holding the seat (user, device...).")
    lease_ttl_seconds: int | None = Field(
        default=None, ge=1, le=366 * 86_400,
        description="Lease length; default the entitlement's lease_ttl_seconds, none: no expiry.",
    )


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=255)


class SeatRead(BaseModel):
    decision: Literal["allow", "allow_overdraft", "deny"]
    reason: str
    active: int
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    item: str
    expires_at: datetime | None = None


def seat_read(result: service.SeatResult) -> SeatRead:
    d = result.decision
    return SeatRead(
        decision=d.decision.value, reason=str(d.reason), active=result.active, included=d.included,
        soft_limit=d.soft_limit, hard_limit=d.hard_limit, item=result.item, expires_at=result.expires_at,
    )


@router.post("/activate", response_model=SeatRead)
async def activate(
    customer_key: str, feature_key: str, data: SeatIn, principal: Ingester, session: WriteSession,
    idem: IngestIdempotent,
) -> Response:
    """Take a seat for the item: allow, allow_overdraft past the soft limit, deny past the hard one.

    Activating an item that already holds a live seat refreshes its lease and takes no seat.
    """
    return await idem.respond(200, seat_read(await service.activate(
        session, principal.tenant_id, customer_key, feature_key, data.item,
        lease_ttl_seconds=data.lease_ttl_seconds, at=utcnow(),
    )))


@router.post("/heartbeat", response_model=SeatRead)
async def heartbeat(
    customer_key: str, feature_key: str, data: SeatIn, principal: Ingester, session: WriteSession,
    idem: IngestIdempotent,
) -> Response:
    """Extend the item's live lease; 404 if it was never activated, 409 if its lease ended."""
    return await idem.respond(200, seat_read(await service.heartbeat(
        session, principal.tenant_id, customer_key, feature_key, data.item,
        lease_ttl_seconds=data.lease_ttl_seconds, at=utcnow(),
    )))


@router.post("/release", response_model=SeatRead)
async def release(
    customer_key: str, feature_key: str, data: ReleaseIn, principal: Ingester, session: WriteSession,
    idem: IngestIdempotent,
) -> Response:
    """Free the item's seat; 404 if it was never activated, 409 if already released or expired."""
    return await idem.respond(200, seat_read(await service.release(
        session, principal.tenant_id, customer_key, feature_key, data.item, at=utcnow(),
    )))


@router.get("", response_model=Page[SeatHolderRead])
async def list_seat_holders(
    customer_key: str, feature_key: str, principal: AnyKey, session: ReadSession,
    limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, object]:
    """The items holding a seat now, earliest seat first; an expired or released lease holds none.

    `in_overdraft` marks the seats past the soft limit, which are the last ones taken.
    """
    after = _after(cursor)
    found = await service.holders(
        session, principal.tenant_id, customer_key, feature_key, at=utcnow(), limit=limit, after=after,
    )
    return page(
        [SeatHolderRead(item=h.item, activated_at=h.activated_at, expires_at=h.expires_at,
                        lease_ttl_seconds=h.lease_ttl_seconds, in_overdraft=h.in_overdraft) for h in found],
        found, limit=limit, position=lambda h: pair_position(str(to_micros(h.activated_at)), h.item), of=_LIST,
    )


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    """The (activated_at, item) a cursor of this list stands for; an item may hold spaces, so
    the time comes first."""
    position = decode_pair_cursor(cursor, of=_LIST)
    if position is None:
        return None
    micros, item = position
    if not micros.isascii() or not micros.isdigit():
        raise bad_cursor()
    try:
        return from_micros(int(micros)), item
    except (ValueError, OverflowError, OSError):  # not a number, or no instant a lease can have
        raise bad_cursor() from None
