"""Grants on a customer's metered feature: create, list, read, void.

Create and void take an `Idempotency-Key`: a retry returns the first answer and grants (or
voids) nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.deps import (
    Admin,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    decode_cursor,
    page,
)
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.customers.models import Customer
from allotment.entitlements import features
from allotment.entitlements import grants as service
from allotment.entitlements.models import GrantRecord
from allotment.entitlements.periods import Interval, UsagePeriod
from allotment.entitlements.schemas import GrantCreate, GrantRead, GrantVoid, RecurrenceRead
from allotment.entitlements.standing import recurrence_of
from allotment.types import utcnow

router = APIRouter(tags=["grants"])
_PATH = "/v1/customers/{customer_key}/entitlements/{feature_key}/grants"


async def grant_reads(
    session: AsyncSession, tenant_id: str, records: Sequence[GrantRecord], at: datetime
) -> list[GrantRead]:
    """Each grant with its balance now and the keys of its customer and feature."""
    balances = await service.balances(session, tenant_id, records, at=at)
    feature_keys = await features.keys_of(session, tenant_id, {r.feature_id for r in records})
    customer_keys = {r.customer_id: await _customer_key(session, r.customer_id) for r in records}
    return [
        GrantRead(
            id=r.id, customer=customer_keys[r.customer_id], feature=feature_keys[r.feature_id],
            amount=r.amount, balance=balances[r.id], priority=r.priority, effective_at=r.effective_at,
            expires_at=r.expires_at, voided_at=r.voided_at, void_reason=r.void_reason,
            min_rollover=r.min_rollover, max_rollover=r.max_rollover, recurrence=_recurrence_read(r),
            metadata=r.metadata_, created_at=r.created_at,
        )
        for r in records
    ]


def _recurrence_read(record: GrantRecord) -> RecurrenceRead | None:
    every = recurrence_of(record)
    return None if every is None else RecurrenceRead(interval=every.interval, anchor=every.anchor,
                                                     time_zone=every.tz.key, timezone=every.tz.key)


def _recurrence(data: GrantCreate, at: datetime) -> UsagePeriod | None:
    """The grant's steps; they fall on its effective time unless an anchor says otherwise."""
    if data.recurrence is None:
        return None
    anchor = data.recurrence.anchor or data.effective_at or at
    return UsagePeriod(Interval(data.recurrence.interval), anchor, ZoneInfo(data.recurrence.time_zone))


async def _customer_key(session: AsyncSession, customer_id: str) -> str:
    customer = await session.get(Customer, customer_id)
    return customer_id if customer is None else customer.key


@router.post(_PATH, status_code=201, response_model=GrantRead)
async def create_grant(
    customer_key: str, feature_key: str, data: GrantCreate, principal: Admin, session: WriteSession,
    idem: Idempotent,
) -> Response:
    """Grant extra units of a metered feature; they raise the soft and hard limits while live."""
    at = utcnow()
    record = await service.create(
        session, principal.tenant_id, customer=customer_key, feature=feature_key, amount=data.amount,
        priority=data.priority, effective_at=data.effective_at, expires_at=data.expires_at,
        min_rollover=data.min_rollover, max_rollover=data.max_rollover,
        recurrence=_recurrence(data, at), metadata=data.metadata, at=at, actor=principal.key_id,
    )
    [read] = await grant_reads(session, principal.tenant_id, [record], at)
    return await idem.respond(201, read)


@router.get(_PATH, response_model=Page[GrantRead])
async def list_grants(
    customer_key: str, feature_key: str, principal: Reader, session: ReadSession,
    limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, object]:
    """The customer's grants on the feature, oldest first, voided ones included."""
    at = utcnow()
    rows = await service.list_(
        session, principal.tenant_id, customer=customer_key, feature=feature_key, at=at,
        after=decode_cursor(cursor, of=_PATH), limit=limit,
    )
    return page(
        await grant_reads(session, principal.tenant_id, rows, at),
        rows, limit=limit, position=lambda r: r.id, of=_PATH,
    )


@router.get("/v1/grants/{grant_id}", response_model=GrantRead)
async def get_grant(grant_id: str, principal: Reader, session: ReadSession) -> GrantRead:
    record = await service.get(session, principal.tenant_id, grant_id)
    [read] = await grant_reads(session, principal.tenant_id, [record], utcnow())
    return read


@router.post("/v1/grants/{grant_id}/void", response_model=GrantRead)
async def void_grant(
    grant_id: str, data: GrantVoid, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """End the grant now: it stops raising limits at once. A grant already voided is a 409,
    unless the request is a retry with the first one's `Idempotency-Key`: it gets that answer."""
    at = utcnow()
    record = await service.void(session, principal.tenant_id, grant_id, reason=data.reason, at=at,
                                actor=principal.key_id)
    [read] = await grant_reads(session, principal.tenant_id, [record], at)
    return await idem.respond(200, read)
