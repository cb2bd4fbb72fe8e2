"""Reservations (`/v1/reservations`): hold units of a metered feature, then commit or release.

Taking, committing and releasing need an `ingest` or `admin` key: they change what the customer
may still use. Any key may read them: the dashboards that read the rest (`read`) and the
devices that hold them (`ingest`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.deps import (
    AnyKey,
    Cursor,
    Db,
    Ingester,
    Limit,
    ReadSession,
    WriteSession,
    decode_cursor,
    page,
)
from allotment.api.idempotency import (
    IngestIdempotent,
    KeyHeader,
    begin,
    one_idempotency_key,
    remember_decision,
    replay_decision,
)
from allotment.api.pages import Page
from allotment.customers import service as customers
from allotment.entitlements import features
from allotment.entitlements import reservations as service
from allotment.entitlements.models import Reservation
from allotment.entitlements.schemas import QuantityOut
from allotment.errors import Conflict
from allotment.types import PositiveQuantity, Quantity, from_micros, utcnow

router = APIRouter(prefix="/v1/reservations", tags=["reservations"])
_LIST = "/v1/reservations"


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, description="Customer key or id.")
    feature: str = Field(min_length=1, description="Feature key or id (a metered entitlement).")
    quantity: PositiveQuantity
    ttl_seconds: int = Field(ge=1, le=366 * 86_400, description="The hold expires this long after it is taken.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class CommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Quantity = Field(description="The actual amount used: less or more than was reserved.")


class ReservationRead(BaseModel):
    id: str
    status: Literal["open", "committed", "released", "expired"]
    customer: str = Field(description="Customer key.")
    feature: str = Field(description="Feature key.")
    customer_id: str
    feature_id: str
    quantity: QuantityOut
    committed_quantity: QuantityOut | None
    period_start: datetime
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None


class HeldRead(BaseModel):
    decision: Literal["allow", "allow_overdraft", "deny"]
    reason: str
    reservation: ReservationRead | None
    usage: QuantityOut | None = None
    reserved: QuantityOut
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    balance: QuantityOut | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


class SettledRead(BaseModel):
    """The reservation closed, and where its entitlement's period stands after it."""

    reservation: ReservationRead
    usage: QuantityOut
    reserved: QuantityOut
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = Field(default=None, description="Effective: raised by live grants.")
    hard_limit: QuantityOut | None = Field(default=None, description="Effective: raised by live grants; null when uncapped.")
    balance: QuantityOut | None = Field(default=None, description="What is left to use under the soft limit.")
    overage: QuantityOut | None = None


def settled_read(read: ReservationRead, settled: service.Settled) -> SettledRead:
    after = settled.standing
    return SettledRead(reservation=read, usage=settled.usage, reserved=settled.reserved, included=after.included,
                       soft_limit=after.soft_limit, hard_limit=after.hard_limit, balance=after.balance,
                       overage=after.overage)


async def reservation_read(session: AsyncSession, r: Reservation, *, at: datetime | None = None) -> ReservationRead:
    """The reservation as of `at` (`as_read`), with its customer and feature keys."""
    customer = await customers.keys_of(session, r.tenant_id, [r.customer_id])
    feature = await features.keys_of(session, r.tenant_id, [r.feature_id])
    return as_read(r, customer[r.customer_id], feature[r.feature_id], at=at)


def as_read(r: Reservation, customer: str, feature: str, *, at: datetime | None) -> ReservationRead:
    """One still open past its expiry reads as expired, as the sweep will record it (closed
    at its expiry), and as a commit would already answer."""
    status, closed_at = r.status, r.closed_at
    if status == "open" and at is not None and r.expires_at <= at:
        status, closed_at = "expired", r.expires_at
    return ReservationRead(
        id=r.id, status=status, customer=customer, feature=feature,  # type: ignore[arg-type]
        customer_id=r.customer_id, feature_id=r.feature_id,
        quantity=r.quantity, committed_quantity=r.committed_quantity, period_start=from_micros(r.period_start),
        expires_at=r.expires_at, created_at=r.created_at, closed_at=closed_at,
    )


@router.post("", response_model=HeldRead, status_code=201, responses={
    200: {"model": HeldRead, "description": "Denied (`decision` is `deny`): nothing is held, `reservation` is null"},
})
async def create(
    data: ReservationIn,
    principal: Ingester,
    session: WriteSession,
    idempotency_header: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Hold `quantity` for `ttl_seconds`: 201 with the reservation, or 200 with `deny`.

    Denied (`hard_limit`) when the hold would cross the hard limit; held units count against
    every other check and reservation. A retry with the same idempotency key returns the first
    answer (`Idempotent-Replayed: true`): the reservation it made (201), as it stands now, and
    holds nothing more; or its refusal (200), decided once even if room was made since.
    """
    key = one_idempotency_key(data.idempotency_key, idempotency_header)
    request = service.ReservationRequest(data.customer, data.feature, data.quantity, data.ttl_seconds, key)
    if key is not None:
        await replay_decision(session, principal.tenant_id, key, request.fingerprint())
    held = await service.create(session, principal.tenant_id, request, at=utcnow())
    d = held.decision
    body = HeldRead(
        decision=d.decision.value, reason=str(d.reason),
        reservation=None if held.reservation is None else await reservation_read(session, held.reservation),
        usage=d.usage, reserved=held.reserved, included=d.included, soft_limit=d.soft_limit,
        hard_limit=d.hard_limit, balance=d.balance, period_start=held.period_start, period_end=held.period_end,
    )
    status = 201 if held.reservation is not None else 200  # a replay answers as the first did
    headers = {"Idempotent-Replayed": "true"} if held.replayed else None
    answer = body.model_dump_json().encode()
    if key is not None and held.reservation is None:  # no hold answers the retries: keep the refusal
        await remember_decision(session, principal.tenant_id, key, request.fingerprint(), status, answer)
    return Response(answer, status_code=status, media_type="application/json", headers=headers)


@router.get("", response_model=Page[ReservationRead])
async def list_reservations(
    principal: AnyKey,
    session: ReadSession,
    customer: str | None = None,
    feature: str | None = None,
    status: Literal["open", "committed", "released", "expired"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Reservations, oldest first; filter by customer and feature (key or id) and by status
    (`open` holds, e.g. the charging sessions in progress)."""
    at = utcnow()
    rows = await service.list_(session, principal.tenant_id, customer=customer, feature=feature, status=status,
                               after=decode_cursor(cursor, of=_LIST), limit=limit, at=at)
    customer_keys = await customers.keys_of(session, principal.tenant_id, {r.customer_id for r in rows})
    feature_keys = await features.keys_of(session, principal.tenant_id, {r.feature_id for r in rows})
    return page([as_read(r, customer_keys[r.customer_id], feature_keys[r.feature_id], at=at) for r in rows],
                rows, limit=limit, position=lambda r: r.id, of=_LIST)


@router.get("/{reservation_id}", response_model=ReservationRead)
async def get(reservation_id: str, principal: AnyKey, session: ReadSession) -> ReservationRead:
    """One reservation; 404 if unknown."""
    return await reservation_read(session, await service.get(session, principal.tenant_id, reservation_id),
                                  at=utcnow())


@router.post("/{reservation_id}/commit", response_model=SettledRead)
async def commit(
    reservation_id: str, data: CommitIn, principal: Ingester, db: Db, request: Request,
    idempotency_key: KeyHeader = None,
) -> Response:
    """Record the actual `quantity` and end the hold.

    409 when the reservation is no longer open (`reservation_expired`, `reservation_committed`,
    `reservation_released`) or when more than was held would cross the hard limit (`hard_limit`,
    recorded as a denial). A retry with the same `Idempotency-Key` gets the first answer again
    (`Idempotent-Replayed: true`), not a 409: a charger retrying after a timeout learns that its
    commit went through.
    """
    at = utcnow()
    try:
        async with db.transaction() as session:
            idem = await begin(session, principal.tenant_id, request, idempotency_key)
            settled = await service.commit(session, principal.tenant_id, reservation_id, data.quantity, at=at)
            read = await reservation_read(session, settled.reservation)
            return await idem.respond(200, settled_read(read, settled))
    except Conflict as refused:
        if refused.code == "hard_limit":
            async with db.transaction() as session:
                await service.record_refused_commit(
                    session, principal.tenant_id, reservation_id, data.quantity, at=at
                )
        raise


@router.post("/{reservation_id}/release", response_model=SettledRead)
async def release(
    reservation_id: str, principal: Ingester, session: WriteSession, idem: IngestIdempotent
) -> Response:
    """Give the hold back without recording usage; 409 when the reservation is no longer open.
    A retry with the same `Idempotency-Key` gets the first answer again."""
    settled = await service.release(session, principal.tenant_id, reservation_id, at=utcnow())
    return await idem.respond(200, settled_read(await reservation_read(session, settled.reservation), settled))
