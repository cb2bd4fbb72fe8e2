"""What was emitted and what happened to it: notifications, deliveries, attempts, replay."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.errors import NotFound
from allotment.notifications import service
from allotment.notifications.models import (
    HELD,
    PENDING,
    Attempt,
    Delivery,
    Notification,
    WebhookEndpoint,
)
from allotment.types import new_id


@dataclass
class DeliveryView:
    delivery: Delivery
    notification_id: str
    type: str
    attempts: list[Attempt]


async def list_notifications(
    session: AsyncSession, tenant_id: str, *, type: str | None, customer_id: str | None,
    before: int | None, limit: int, types: Sequence[str] | None = None,
    since: datetime | None = None, until: datetime | None = None,
) -> list[Notification]:
    """Newest first; `since` and `until` bound the emission time (inclusive, exclusive)."""
    n = Notification
    stmt = select(n).where(n.tenant_id == tenant_id)
    if type is not None:
        stmt = stmt.where(n.type == type)
    if types is not None:
        stmt = stmt.where(n.type.in_(types))
    if since is not None:
        stmt = stmt.where(n.created_at >= since)
    if until is not None:
        stmt = stmt.where(n.created_at < until)
    if customer_id is not None:
        stmt = stmt.where(n.customer_id == customer_id)
    if before is not None:
        stmt = stmt.where(n.seq < before)
    return list(await session.scalars(stmt.order_by(n.seq.desc()).limit(limit)))


async def get_notification(session: AsyncSession, tenant_id: str, notification_id: str) -> Notification:
    found: Notification | None = await session.scalar(
        select(Notification).where(
            Notification.tenant_id == tenant_id, Notification.id == notification_id
        )
    )
    if found is None:
        raise NotFound("notification", notification_id)
    return found


async def deliveries_of(session: AsyncSession, notification: Notification) -> list[DeliveryView]:
    rows = list(await session.scalars(
        select(Delivery).where(
            Delivery.tenant_id == notification.tenant_id,
            Delivery.notification_seq == notification.seq,
        ).order_by(Delivery.endpoint_id)
    ))
    return await _views(session, [(d, notification.id, notification.type) for d in rows])


async def sent_to(
    session: AsyncSession, tenant_id: str, seqs: Sequence[int], endpoint_ids: Sequence[str]
) -> set[int]:
    """Which of these notifications (by `seq`) have a delivery to one of these endpoints."""
    d = Delivery
    found: set[int] = set()
    for i in range(0, len(seqs), 1000):  # bounded IN lists
        found.update(await session.scalars(
            select(d.notification_seq).where(
                d.tenant_id == tenant_id, d.endpoint_id.in_(endpoint_ids),
                d.notification_seq.in_(seqs[i : i + 1000]),
            )
        ))
    return found


async def list_deliveries(
    session: AsyncSession, tenant_id: str, endpoint_id: str, *, status: str | None,
    before: int | None, limit: int,
) -> list[DeliveryView]:
    """Deliveries to one endpoint, newest message first, each with its attempts."""
    await service.get_endpoint(session, tenant_id, endpoint_id)
    d, n = Delivery, Notification
    stmt = (
        select(d, n.id, n.type).join(n, n.seq == d.notification_seq)
        .where(d.tenant_id == tenant_id, d.endpoint_id == endpoint_id)
    )
    if status is not None:
        stmt = stmt.where(d.status == status)
    if before is not None:
        stmt = stmt.where(d.notification_seq < before)
    rows = (await session.execute(stmt.order_by(d.notification_seq.desc()).limit(limit))).all()
    return await _views(session, [(row[0], row[1], row[2]) for row in rows])


async def _views(session: AsyncSession, rows: list[tuple[Delivery, str, str]]) -> list[DeliveryView]:
    attempts: dict[str, list[Attempt]] = defaultdict(list)
    if rows:
        found = await session.scalars(
            select(Attempt).where(Attempt.delivery_id.in_([d.id for d, _, _ in rows]))
            .order_by(Attempt.delivery_id, Attempt.attempt)
        )
        for attempt in found:
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryView(d, nid, type_, attempts[d.id]) for d, nid, type_ in rows]


async def replay(
    session: AsyncSession, tenant_id: str, notification_id: str, *, endpoint_id: str | None,
    at: datetime,
) -> Notification:
    """Send a notification again, with the same `webhook-id`, to one or every endpoint it went to.

    The delivery goes back to pending with a fresh retry horizon; it keeps its place in the
    customer's order, so it is sent before that customer's later pending messages. An attempt
    in flight loses its lease: its answer, arriving later, does not mark the replay as done.
    A disabled endpoint's replay is held until the endpoint is enabled; a deleted endpoint's
    delivery is left as it is.
    """
    notification = await get_notification(session, tenant_id, notification_id)
    stmt = (
        select(Delivery, WebhookEndpoint.enabled).join(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id)
        .where(Delivery.tenant_id == tenant_id, Delivery.notification_seq == notification.seq,
               WebhookEndpoint.deleted_at.is_(None))
    )
    if endpoint_id is not None:
        endpoint = await service.get_endpoint(session, tenant_id, endpoint_id)
        stmt = stmt.where(Delivery.endpoint_id == endpoint_id)
    found = (await session.execute(stmt.with_for_update(of=Delivery))).all()
    if endpoint_id is not None and not found:
        session.add(_new_delivery(notification, endpoint_id, at=at if endpoint.enabled else HELD))
    for delivery, enabled in found:
        if delivery.status != PENDING:
            delivery.status, delivery.delivered_at, delivery.first_attempt_at = PENDING, None, None
        delivery.next_attempt_at = min(delivery.next_attempt_at, at) if enabled else HELD
        delivery.locked_until = delivery.lease = None
    await session.flush()
    return notification


def _new_delivery(notification: Notification, endpoint_id: str, *, at: datetime) -> Delivery:
    return Delivery(
        id=new_id("dlv"), tenant_id=notification.tenant_id, notification_seq=notification.seq,
        endpoint_id=endpoint_id, ordering_key=notification.customer_id or notification.id,
        status=PENDING, attempt_count=0, next_attempt_at=at, created_at=at,
    )
