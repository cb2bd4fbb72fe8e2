"""Webhook endpoints (`/v1/webhook-endpoints`) and their delivery log."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response

from allotment.api.deps import (
    Admin,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    decode_cursor,
    decode_seq_cursor,
    page,
)
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.errors import Conflict
from allotment.notifications import history, service
from allotment.notifications.models import HELD, WebhookEndpoint
from allotment.notifications.schemas import (
    REDACTED,
    AttemptRead,
    DeliveryRead,
    DeliveryStatus,
    PingQueued,
    SecretRotation,
    WebhookEndpointCreate,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from allotment.tenancy.service import Principal, Scope
from allotment.types import utcnow

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
_LIST = "/v1/webhook-endpoints"
_DELIVERIES = "/v1/webhook-endpoints/{endpoint_id}/deliveries"


def endpoint_read(e: WebhookEndpoint, *, header_values: bool) -> WebhookEndpointRead:
    """The endpoint; without `header_values` its custom headers are named but their values
    (an `Authorization` for the receiver, say) are not shown."""
    overlap = e.previous_secret_until
    headers = e.headers or {}
    if not header_values:
        headers = dict.fromkeys(headers, REDACTED)
    return WebhookEndpointRead(
        id=e.id, url=e.url, description=e.description, event_types=e.event_types,
        enabled=e.enabled, rules_only=e.rules_only, headers=headers, body_format=e.body_format,  # type: ignore[arg-type]
        disabled_reason=e.disabled_reason, disabled_at=e.disabled_at,
        previous_secret_expires_at=overlap if overlap is not None and overlap > utcnow() else None,
        created_at=e.created_at, updated_at=e.updated_at,
    )


def with_secret(e: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(**endpoint_read(e, header_values=True).model_dump(), secret=e.secret)


def shows_header_values(principal: Principal) -> bool:
    """Only admin keys, which may change the headers anyway, see what they hold."""
    return principal.scope is Scope.ADMIN


def delivery_read(view: history.DeliveryView) -> DeliveryRead:
    d = view.delivery
    return DeliveryRead(
        id=d.id, notification_id=view.notification_id, type=view.type, endpoint_id=d.endpoint_id,
        status=d.status,  # type: ignore[arg-type]  # one of the three the table holds
        attempt_count=d.attempt_count,
        # None for a delivery held while its endpoint is disabled: it has no time of its own.
        next_attempt_at=d.next_attempt_at if d.status == "pending" and d.next_attempt_at < HELD else None,
        delivered_at=d.delivered_at, created_at=d.created_at,
        attempts=[AttemptRead.model_validate(a, from_attributes=True) for a in view.attempts],
    )


@router.post("", status_code=201, response_model=WebhookEndpointWithSecret)
async def create_endpoint(
    data: WebhookEndpointCreate, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """Register a receiver; the answer carries the signing secret (generated unless given)."""
    endpoint = await service.create_endpoint(session, principal.tenant_id, data, at=utcnow())
    return await idem.respond(201, with_secret(endpoint))


@router.get("", response_model=Page[WebhookEndpointRead])
async def list_endpoints(
    principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    rows = await service.list_endpoints(
        session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit
    )
    reveal = shows_header_values(principal)
    return page([endpoint_read(e, header_values=reveal) for e in rows], rows, limit=limit,
                position=lambda r: r.id, of=_LIST)


@router.get("/{endpoint_id}", response_model=WebhookEndpointRead)
async def get_endpoint(endpoint_id: str, principal: Reader, session: ReadSession) -> WebhookEndpointRead:
    endpoint = await service.get_endpoint(session, principal.tenant_id, endpoint_id)
    return endpoint_read(endpoint, header_values=shows_header_values(principal))


@router.patch("/{endpoint_id}", response_model=WebhookEndpointRead)
async def update_endpoint(
    endpoint_id: str, data: WebhookEndpointUpdate, principal: Admin, session: WriteSession
) -> WebhookEndpointRead:
    """Change the URL, description or types; `enabled: true` resumes a disabled endpoint."""
    endpoint = await service.update_endpoint(
        session, principal.tenant_id, endpoint_id, data, at=utcnow()
    )
    return endpoint_read(endpoint, header_values=True)  # an admin's answer


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, principal: Admin, session: WriteSession) -> Response:
    """Stop sending to it; its delivery log stays readable through the notifications."""
    await service.delete_endpoint(session, principal.tenant_id, endpoint_id, at=utcnow())
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookEndpointWithSecret)
async def rotate_secret(
    endpoint_id: str, principal: Admin, session: WriteSession, idem: Idempotent,
    body: SecretRotation | None = None,
) -> Response:
    """A new secret signs every attempt from now on, retries of older messages included.

    The replaced secret keeps signing beside it (a second signature in `webhook-signature`)
    for `keep_previous_seconds` (default a day), so receivers can switch without a gap. A
    retry with the same `Idempotency-Key` rotates nothing more and gets the first answer.
    """
    keep = (body or SecretRotation()).keep_previous_seconds
    endpoint = await service.rotate_secret(
        session, principal.tenant_id, endpoint_id, at=utcnow(), keep_previous=timedelta(seconds=keep)
    )
    return await idem.respond(200, with_secret(endpoint))


@router.post("/{endpoint_id}/test", status_code=202, response_model=PingQueued)
async def send_test(endpoint_id: str, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Queue a signed `webhook.test` ping to this endpoint through the outbox.

    Follow it at `GET /v1/notifications/{notification_id}`. A retry with the same
    `Idempotency-Key` queues nothing more and gets the first answer.
    """
    endpoint = await service.get_endpoint(session, principal.tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"webhook endpoint '{endpoint_id}' is disabled; enable it to test it")
    notification_id = await service.send_test(session, principal.tenant_id, endpoint_id, at=utcnow())
    return await idem.respond(202, PingQueued(notification_id=notification_id))


@router.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryRead])
async def list_deliveries(
    endpoint_id: str,
    principal: Reader,
    session: ReadSession,
    status: DeliveryStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """The delivery log of this endpoint, newest message first, with every attempt."""
    rows = await history.list_deliveries(
        session, principal.tenant_id, endpoint_id, status=status,
        before=decode_seq_cursor(cursor, of=_DELIVERIES),
        limit=limit,
    )
    return page([delivery_read(v) for v in rows], rows, limit=limit,
                position=lambda v: v.delivery.notification_seq, of=_DELIVERIES)
