"""Emitting notifications (the outbox) and managing webhook endpoints.

`emit` is what other domains call, inside the transaction of the change that caused the
notification, so the two commit or roll back together: a crash after commit loses nothing,
a rollback sends nothing. It writes one row and never one per endpoint: the delivery worker
fans out later (outbox.fan_out), which keeps the cost on ingest and check paths constant
however many endpoints a tenant has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.errors import NotFound
from allotment.notifications import catalogue, queries, signing
from allotment.notifications.models import (
    DEAD,
    HELD,
    PENDING,
    Delivery,
    Notification,
    WebhookEndpoint,
)
from allotment.notifications.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from allotment.types import as_utc, new_id


def encode_payload(payload: Mapping[str, Any]) -> str:
    return codec.render(payload).decode()


@dataclass(frozen=True)
class Note:
    """One notification to put in the outbox (see `emit`)."""

    tenant_id: str
    type: str
    dedupe_key: str
    customer_id: str | None
    payload: Mapping[str, Any]
    at: datetime


async def emit(
    session: AsyncSession,
    tenant_id: str,
    *,
    type: str,
    dedupe_key: str,
    customer_id: str | None,
    payload: Mapping[str, Any],
    at: datetime,
) -> bool:
    """Put a notification in the outbox; False when `dedupe_key` was emitted before.

    `dedupe_key` is unique per tenant and decides "once": build it from what makes the
    occurrence unique, e.g. `threshold:{entitlement_id}:{period_start}:80`. Messages with
    the same `customer_id` reach each endpoint in the order they were emitted. Never
    commits and does not flush the session: the customer row must already be in the
    database.
    """
    return await emit_all(session, [Note(tenant_id, type, dedupe_key, customer_id, payload, at)]) == 1


async def emit_all(session: AsyncSession, notes: Sequence[Note]) -> int:
    """`emit` for several notifications in one statement, in their order; returns how many
    were new. For a batch of usage that crosses several thresholds at once."""
    return await queries.insert_notifications(session, [_row(n) for n in notes])


async def was_emitted(session: AsyncSession, tenant_id: str, dedupe_key: str) -> bool:
    """Whether `dedupe_key` was emitted before: lets a producer skip building a payload that
    `emit` would drop (one read on the unique key)."""
    found = await session.scalar(
        select(Notification.seq).where(Notification.tenant_id == tenant_id, Notification.dedupe_key == dedupe_key)
    )
    return found is not None


def _row(note: Note, *, endpoint_id: str | None = None, rule_id: str | None = None) -> tuple[Any, ...]:
    """The outbox row of a note. `endpoint_id` or `rule_id` address it to one endpoint, or to
    the endpoints of one rule, instead of to every subscriber."""
    if note.type not in catalogue.EMITTABLE:
        raise ValueError(f"unknown notification type '{note.type}'")
    if not 1 <= len(note.dedupe_key) <= 256:
        raise ValueError("dedupe_key must be 1 to 256 characters")
    return (new_id("ntf"), note.tenant_id, note.type, note.dedupe_key, note.customer_id, endpoint_id, rule_id,
            encode_payload(note.payload), as_utc(note.at))


# --- endpoints ------------------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession, tenant_id: str, data: WebhookEndpointCreate, *, at: datetime
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=new_id("whe"), tenant_id=tenant_id, url=data.url, description=data.description,
        secret=data.secret or signing.generate_secret(), event_types=list(dict.fromkeys(data.event_types)),
        enabled=data.enabled, rules_only=data.rules_only, headers=data.headers,
        body_format=data.body_format, created_at=at, updated_at=at,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get_endpoint(session: AsyncSession, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """A live (not deleted) endpoint of this tenant; anything else is a 404."""
    endpoint: WebhookEndpoint | None = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant_id,
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.deleted_at.is_(None),
        )
    )
    if endpoint is None:
        raise NotFound("webhook_endpoint", endpoint_id)
    return endpoint


async def list_endpoints(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int,
    include_deleted: bool = False,
) -> list[WebhookEndpoint]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    if not include_deleted:
        stmt = stmt.where(WebhookEndpoint.deleted_at.is_(None))
    if after:
        stmt = stmt.where(WebhookEndpoint.id > after)
    return list(await session.scalars(stmt.order_by(WebhookEndpoint.id).limit(limit)))


async def update_endpoint(
    session: AsyncSession, tenant_id: str, endpoint_id: str, data: WebhookEndpointUpdate,
    *, at: datetime,
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        endpoint.url = changes["url"]
    if "description" in changes:
        endpoint.description = changes["description"]
    if changes.get("event_types") is not None:
        endpoint.event_types = list(dict.fromkeys(changes["event_types"]))
    if changes.get("rules_only") is not None:
        endpoint.rules_only = changes["rules_only"]
    if changes.get("headers") is not None:
        endpoint.headers = changes["headers"]
    if changes.get("body_format") is not None:
        endpoint.body_format = changes["body_format"]
    if changes.get("secret") is not None:
        replace_secret(endpoint, changes["secret"], at=at, keep_previous=DEFAULT_OVERLAP)
    if changes.get("enabled") is True and not endpoint.enabled:
        await _enable(session, endpoint, at=at)
    elif changes.get("enabled") is False and endpoint.enabled:
        endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = False, at, "disabled by an operator"
        await hold_deliveries(session, endpoint.id)
    endpoint.updated_at = at
    await session.flush()
    return endpoint


async def _enable(session: AsyncSession, endpoint: WebhookEndpoint, *, at: datetime) -> None:
    """Held deliveries resume now, with a fresh retry horizon: the outage was not theirs to pay for."""
    endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = True, None, None
    endpoint.failing_since = None
    await session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint.id, Delivery.status == PENDING)
        .values(first_attempt_at=None, next_attempt_at=at)
    )


async def hold_deliveries(session: AsyncSession, endpoint_id: str) -> None:
    """Park a disabled endpoint's pending deliveries until it is enabled.

    Left due, they would keep every worker claiming (and finding nothing it may send) several
    times a second for as long as the endpoint is off. An attempt in flight loses its lease,
    so its answer cannot put the delivery back on the schedule.
    """
    await session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.status == PENDING)
        .values(next_attempt_at=HELD, locked_until=None, lease=None)
        .execution_options(synchronize_session=False)
    )


async def settle_held_deliveries(session: AsyncSession, *, at: datetime) -> None:
    """Make the hold of each pending delivery match its endpoint: held while it is disabled,
    dead once it is deleted, due again (at `at`) once it is enabled.

    Disabling, deleting and enabling do this at once; the periodic scan repeats it for rows
    that escaped (stored by an older version, fanned out or claimed while the endpoint was
    being switched), which would otherwise keep every worker polling, or stay held for good.
    """
    e, d = WebhookEndpoint, Delivery
    off = select(e.id).where(e.enabled.is_(False), e.deleted_at.is_(None))
    gone = select(e.id).where(e.deleted_at.is_not(None))
    on = select(e.id).where(e.enabled.is_(True), e.deleted_at.is_(None))
    for where, values in (
        ((d.next_attempt_at < HELD, d.endpoint_id.in_(off)), {"next_attempt_at": HELD}),
        ((d.endpoint_id.in_(gone),), {"status": DEAD}),
        ((d.next_attempt_at >= HELD, d.endpoint_id.in_(on)), {"next_attempt_at": at}),
    ):
        await session.execute(
            update(d).where(d.status == PENDING, *where).values(**values, locked_until=None, lease=None)
            .execution_options(synchronize_session=False)
        )


async def delete_endpoint(session: AsyncSession, tenant_id: str, endpoint_id: str, *, at: datetime) -> None:
    """Soft delete: the delivery log stays readable; its pending deliveries, which will never
    be sent, are dead-lettered so that the log says so and no worker keeps looking at them."""
    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    endpoint.deleted_at = endpoint.updated_at = at
    endpoint.enabled = False
    await session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.status == PENDING)
        .values(status=DEAD, locked_until=None, lease=None)
        .execution_options(synchronize_session=False)
    )
    await session.flush()


# How long a replaced secret keeps signing beside the new one unless told otherwise: a day for
# receivers to switch, as the signature scheme's multiple-signature header intends.
DEFAULT_OVERLAP = timedelta(hours=24)


async def rotate_secret(
    session: AsyncSession, tenant_id: str, endpoint_id: str, *, at: datetime,
    keep_previous: timedelta = DEFAULT_OVERLAP,
) -> WebhookEndpoint:
    """A new secret signs every attempt from now on, retries of older messages included; the
    replaced one signs beside it for `keep_previous` more."""
    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    replace_secret(endpoint, signing.generate_secret(), at=at, keep_previous=keep_previous)
    await session.flush()
    return endpoint


def replace_secret(endpoint: WebhookEndpoint, secret: str, *, at: datetime, keep_previous: timedelta) -> None:
    if keep_previous > timedelta(0):
        endpoint.previous_secret, endpoint.previous_secret_until = endpoint.secret, at + keep_previous
    else:
        endpoint.previous_secret = endpoint.previous_secret_until = None
    endpoint.secret = secret
    endpoint.updated_at = at


async def send_test(session: AsyncSession, tenant_id: str, endpoint_id: str, *, at: datetime) -> str:
    """A `webhook.test` ping to one endpoint through the real outbox; returns its id."""
    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    return await ping(
        session, tenant_id, payload={"endpoint_id": endpoint.id, "url": endpoint.url}, at=at,
        endpoint_id=endpoint.id,
    )


async def ping(
    session: AsyncSession, tenant_id: str, *, payload: Mapping[str, Any], at: datetime,
    endpoint_id: str | None = None, rule_id: str | None = None,
) -> str:
    """A `webhook.test` to one endpoint, or to the endpoints one rule names; returns its id."""
    row = _row(Note(tenant_id, catalogue.TEST, new_id("ping"), None, payload, at),
               endpoint_id=endpoint_id, rule_id=rule_id)
    await queries.insert_notifications(session, [row])  # a fresh dedupe key is never taken
    return str(row[0])
