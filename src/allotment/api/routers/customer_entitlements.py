"""A customer's entitlements and their current state (`GET /v1/customers/{key}/entitlements`).

Read-only; the admin routes under the same prefix (entitlements_admin.py) use other methods.
"""

from __future__ import annotations

from fastapi import APIRouter

from allotment.api.deps import (
    Cursor,
    Limit,
    Reader,
    ReadSession,
    decode_pair_cursor,
    page,
    pair_position,
)
from allotment.api.pages import Page
from allotment.entitlements import state as service
from allotment.entitlements.engine import Kind
from allotment.entitlements.schemas import EntitlementStateRead, GrantStateRead
from allotment.types import utcnow

_LIST = "/v1/customers/{customer_key}/entitlements"
router = APIRouter(prefix=_LIST, tags=["entitlements"])


def state_read(s: service.EntitlementState) -> EntitlementStateRead:
    return EntitlementStateRead(
        feature=s.feature_key, kind=Kind(s.row.kind),
        source=s.row.source,  # type: ignore[arg-type]
        has_access=s.has_access, in_overdraft=s.in_overdraft, config=s.config, usage=s.usage,
        reserved=s.reserved, included=s.included, soft_limit=s.soft_limit, hard_limit=s.hard_limit, balance=s.balance,
        overage=s.overage, period_start=s.period_start, period_end=s.period_end, rolled_over=s.rolled_over,
        grants=[GrantStateRead(id=g.grant.id, amount=g.grant.amount, balance=g.balance, priority=g.grant.priority,
                               effective_at=g.grant.effective_at, expires_at=g.grant.expires_at) for g in s.grants],
    )


@router.get("", response_model=Page[EntitlementStateRead])
async def list_customer_entitlements(
    customer_key: str, principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    """Every feature the customer is entitled to now, by feature key, with its state.

    Paged as every list is, although a customer holds one entitlement per feature: a client
    that learned `limit` on one list must be able to send it here too.
    """
    states = await service.list_states(
        session, principal.tenant_id, customer_key, at=utcnow(), limit=limit, after=decode_pair_cursor(cursor, of=_LIST)
    )
    return page([state_read(s) for s in states], states, limit=limit,
                position=lambda s: pair_position(s.feature_key, s.row.feature_id), of=_LIST)


@router.get("/{feature_key}", response_model=EntitlementStateRead)
async def get_customer_entitlement(
    customer_key: str, feature_key: str, principal: Reader, session: ReadSession
) -> EntitlementStateRead:
    """The customer's entitlement to one feature now; none is a 404."""
    return state_read(
        await service.get_state(session, principal.tenant_id, customer_key, feature_key, at=utcnow())
    )
