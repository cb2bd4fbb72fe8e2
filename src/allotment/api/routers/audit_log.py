"""The audit log (`/v1/audit-log`)."""

from __future__ import annotations

from fastapi import APIRouter

from allotment.api.deps import Admin, Cursor, Limit, ReadSession, decode_cursor, page
from allotment.api.pages import Page
from allotment.entitlements import audit
from allotment.entitlements.schemas import AuditRead

router = APIRouter(prefix="/v1/audit-log", tags=["audit"])
_LIST = "/v1/audit-log"


@router.get("", response_model=Page[AuditRead])
async def list_audit_log(
    principal: Admin,
    session: ReadSession,
    entity_type: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Who changed what, oldest first; filter by entity or action."""
    rows = await audit.list_(
        session, principal.tenant_id, entity_type=entity_type, entity_id=entity_id,
        action=action, after=decode_cursor(cursor, of=_LIST), limit=limit,
    )
    return page(
        [AuditRead.model_validate(r, from_attributes=True) for r in rows],
        rows, limit=limit, position=lambda r: r.id, of=_LIST,
    )
