"""Plans and their versions (`/v1/plans`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

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
from allotment.entitlements import plans as service
from allotment.entitlements.schemas import PlanCreate, PlanEntitlementRead, PlanRead
from allotment.entitlements.values import of_row
from allotment.types import utcnow

router = APIRouter(prefix="/v1/plans", tags=["plans"])
_LIST = "/v1/plans"


def plan_read(view: service.PlanView) -> PlanRead:
    p = view.plan
    return PlanRead(
        id=p.id, key=p.key, version=p.version, name=p.name, description=p.description,
        billing_interval=p.billing_interval,  # type: ignore[arg-type]
        currency=p.currency, next_tier=p.next_tier, status=p.status,  # type: ignore[arg-type]
        entitlements=[PlanEntitlementRead(feature=key, **of_row(e)) for key, e in view.entitlements],
        created_at=p.created_at, published_at=p.published_at,
    )


@router.post("", status_code=201, response_model=PlanRead)
async def create_plan(data: PlanCreate, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Version 1 of a new plan, or the next draft version of an existing key."""
    view = await service.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())
    return await idem.respond(201, plan_read(view))


@router.get("", response_model=Page[PlanRead])
async def list_plans(
    principal: Reader,
    session: ReadSession,
    key: str | None = None,
    status: Literal["draft", "published", "archived"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Every version of every plan, oldest first; filter by key or status."""
    rows = await service.list_(
        session, principal.tenant_id, key=key, status=status, after=decode_cursor(cursor, of=_LIST), limit=limit
    )
    return page([plan_read(v) for v in rows], rows, limit=limit, position=lambda r: r.plan.id, of=_LIST)


@router.get("/{plan_key}", response_model=PlanRead)
async def get_plan(
    plan_key: str,
    principal: Reader,
    session: ReadSession,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Default: latest published.")] = None,
) -> PlanRead:
    return plan_read(await service.get(session, principal.tenant_id, plan_key, version=version))


@router.post("/{plan_key}/publish", response_model=PlanRead)
async def publish_plan(plan_key: str, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Publish the draft; the previous published version is archived. Existing subscriptions
    stay on their version until migrated. Without a draft: 409, unless the request is a retry
    with the first one's `Idempotency-Key`: it gets that answer."""
    view = await service.publish(session, principal.tenant_id, plan_key, actor=principal.key_id, at=utcnow())
    return await idem.respond(200, plan_read(view))
