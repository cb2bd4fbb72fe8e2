"""Real-time checks (`/v1/check`) and the denials they recorded (`/v1/denials`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from allotment.api.deps import (
    ALLOWED,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    authenticate,
    decode_cursor,
    encode_cursor,
)
from allotment.entitlements import check as service
from allotment.entitlements.schemas import CheckIn, CheckRead, DenialRead
from allotment.errors import Forbidden, ValidationFailed
from allotment.tenancy.service import Principal
from allotment.types import utcnow

router = APIRouter(tags=["check"])

AnyKey = Annotated[Principal, Depends(authenticate)]


def check_read(result: service.CheckResult) -> CheckRead:
    d = result.decision
    return CheckRead(
        decision=d.decision.value, reason=str(d.reason), usage=d.usage, included=d.included,
        soft_limit=d.soft_limit, hard_limit=d.hard_limit, balance=d.balance, overage=d.overage,
        period_start=result.period_start, period_end=result.period_end,
        config=None if d.config is None else dict(d.config),
    )


@router.post("/v1/check", response_model=CheckRead)
async def check(
    data: CheckIn,
    principal: AnyKey,
    session: WriteSession,
    idempotency_header: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """May the customer use `quantity` of the feature now? With `consume`, use it atomically.

    Any key may check; consuming needs an `ingest` or `admin` key.
    """
    if data.consume and principal.scope not in ALLOWED["ingest"]:
        raise Forbidden(f"this API key has scope '{principal.scope}'; consuming needs 'ingest'")
    key = data.idempotency_key or idempotency_header
    if key is not None and len(key) > 255:
        raise ValidationFailed.on("Idempotency-Key", "must be 1 to 255 characters")
    request = service.CheckRequest(data.customer, data.feature, data.quantity, data.consume, key)
    result = await service.check(session, principal.tenant_id, request, at=utcnow())
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    body = check_read(result).model_dump_json().encode()
    return Response(body, media_type="application/json", headers=headers)


@router.get("/v1/denials")
async def list_denials(
    principal: Reader,
    session: ReadSession,
    customer: str | None = None,
    feature: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Refused checks, oldest first; filter by customer and feature (key or id)."""
    rows = await service.list_denials(
        session, principal.tenant_id, customer=customer, feature=feature,
        after=decode_cursor(cursor), limit=limit,
    )
    return {
        "items": [DenialRead.model_validate(r, from_attributes=True) for r in rows],
        "next_cursor": encode_cursor(rows[-1].id) if len(rows) == limit else None,
    }
