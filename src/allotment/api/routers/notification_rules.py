"""Notification rules (`/v1/notification-rules`): thresholds per feature, grant lead times."""

from __future__ import annotations

from fastapi import APIRouter, Response

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
from allotment.notifications import rules
from allotment.notifications.models import NotificationRule
from allotment.notifications.schemas import (
    NotificationRuleCreate,
    NotificationRuleRead,
    NotificationRuleUpdate,
    ThresholdSpec,
)
from allotment.types import utcnow

router = APIRouter(prefix="/v1/notification-rules", tags=["notifications"])
_LIST = "/v1/notification-rules"


def rule_read(r: NotificationRule) -> NotificationRuleRead:
    return NotificationRuleRead(
        id=r.id, event_type=r.event_type, name=r.name, features=r.features,
        thresholds=[ThresholdSpec(type=t.type, value=t.value) for t in rules.thresholds_of(r)],
        lead_time_seconds=r.lead_time_seconds, endpoint_ids=r.endpoint_ids or [],
        enabled=r.enabled,
        created_at=r.created_at, updated_at=r.updated_at,
    )


@router.post("", status_code=201, response_model=NotificationRuleRead)
async def create_rule(
    data: NotificationRuleCreate, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """Configure thresholds (replacing the default 80 % and 100 %) or a grant lead time."""
    rule = await rules.create(session, principal.tenant_id, data, at=utcnow())
    return await idem.respond(201, rule_read(rule))


@router.get("", response_model=Page[NotificationRuleRead])
async def list_rules(
    principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    rows = await rules.list_(session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit)
    return page([rule_read(r) for r in rows], rows, limit=limit, position=lambda r: r.id, of=_LIST)


@router.get("/{rule_id}", response_model=NotificationRuleRead)
async def get_rule(rule_id: str, principal: Reader, session: ReadSession) -> NotificationRuleRead:
    return rule_read(await rules.get(session, principal.tenant_id, rule_id))


@router.patch("/{rule_id}", response_model=NotificationRuleRead)
async def update_rule(
    rule_id: str, data: NotificationRuleUpdate, principal: Admin, session: WriteSession
) -> NotificationRuleRead:
    return rule_read(await rules.update(session, principal.tenant_id, rule_id, data, at=utcnow()))


@router.delete("/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, principal: Admin, session: WriteSession) -> Response:
    """Deleting the tenant's last threshold rule brings the default thresholds back."""
    await rules.delete(session, principal.tenant_id, rule_id)
    return Response(status_code=204)
