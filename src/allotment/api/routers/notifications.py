"""Emitted notifications (`/v1/notifications`): what was sent, where, and replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from allotment import codec
from allotment.api.deps import (
    Admin,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    decode_seq_cursor,
    page,
)
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.api.routers.webhooks import delivery_read
from allotment.customers import service as customers
from allotment.notifications import history
from allotment.notifications.models import Notification
from allotment.notifications.schemas import NotificationDetail, NotificationRead, ReplayRequest
from allotment.types import utcnow

router = APIRouter(prefix="/v1/notifications", tags=["webhooks"])
_LIST = "/v1/notifications"


def notification_read(n: Notification) -> NotificationRead:
    return NotificationRead(
        id=n.id, type=n.type, customer_id=n.customer_id, payload=codec.loads(n.payload),
        created_at=n.created_at,
    )


async def _detail(session: ReadSession | WriteSession, n: Notification) -> NotificationDetail:
    views = await history.deliveries_of(session, n)
    return NotificationDetail(
        **notification_read(n).model_dump(), deliveries=[delivery_read(v) for v in views]
    )


@router.get("", response_model=Page[NotificationRead])
async def list_notifications(
    principal: Reader,
    session: ReadSession,
    type: str | None = None,
    customer: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Notifications emitted for this tenant, newest first; filter by type or customer (key or id)."""
    customer_id = None
    if customer is not None:
        customer_id = (await customers.find(session, principal.tenant_id, customer)).id
    rows = await history.list_notifications(
        session, principal.tenant_id, type=type, customer_id=customer_id,
        before=decode_seq_cursor(cursor, of=_LIST), limit=limit,
    )
    return page([notification_read(n) for n in rows], rows, limit=limit, position=lambda n: n.seq, of=_LIST)


@router.get("/{notification_id}", response_model=NotificationDetail)
async def get_notification(
    notification_id: str, principal: Reader, session: ReadSession
) -> NotificationDetail:
    """One notification with its delivery to each endpoint and every attempt."""
    n = await history.get_notification(session, principal.tenant_id, notification_id)
    return await _detail(session, n)


@router.post("/{notification_id}/replay", status_code=202, response_model=NotificationDetail)
async def replay(
    notification_id: str,
    principal: Admin,
    session: WriteSession,
    idem: Idempotent,
    data: Annotated[ReplayRequest | None, Body()] = None,
) -> Response:
    """Send it again with the same `webhook-id`, to one endpoint or to every endpoint it went to.

    A retry with the same `Idempotency-Key` sends nothing more and gets the first answer."""
    n = await history.replay(
        session, principal.tenant_id, notification_id,
        endpoint_id=data.endpoint_id if data else None, at=utcnow(),
    )
    return await idem.respond(202, await _detail(session, n))
