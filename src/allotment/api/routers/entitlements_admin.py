"""Per-customer overrides and ad-hoc entitlements (`/v1/customers/{key}/entitlements/...`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from allotment.api.deps import Admin, WriteSession
from allotment.api.idempotency import Idempotent
from allotment.entitlements import overrides as service
from allotment.entitlements import usage_resets
from allotment.entitlements.schemas import (
    AdhocIn,
    CustomerEntitlementRead,
    OverrideIn,
    UsageResetIn,
)
from allotment.entitlements.values import of_row
from allotment.types import utcnow

router = APIRouter(prefix="/v1/customers/{customer_key}/entitlements", tags=["entitlements"])


def entitlement_read(view: service.EntitlementView) -> CustomerEntitlementRead:
    r = view.row
    return CustomerEntitlementRead(
        id=r.id, customer=view.customer_key, feature=view.feature_key,
        source=r.source,  # type: ignore[arg-type]
        subscription_id=r.subscription_id, usage_anchor=r.usage_anchor, time_zone=r.time_zone,
        active_from=r.active_from, active_to=r.active_to, **of_row(r),
    )


@router.post("", status_code=201, response_model=CustomerEntitlementRead)
async def create_adhoc_entitlement(
    customer_key: str, data: AdhocIn, principal: Admin, session: WriteSession, idem: Idempotent
) -> Response:
    """An entitlement outside any plan (e.g. a trial of one feature)."""
    view = await service.create_adhoc(
        session, principal.tenant_id, customer_key, data, actor=principal.key_id, at=utcnow()
    )
    return await idem.respond(201, entitlement_read(view))


@router.delete("/{feature_key}", status_code=204)
async def delete_adhoc_entitlement(
    customer_key: str, feature_key: str, principal: Admin, session: WriteSession
) -> Response:
    """Remove an ad-hoc entitlement (plan entitlements change through the subscription)."""
    await service.remove_adhoc(
        session, principal.tenant_id, customer_key, feature_key, actor=principal.key_id, at=utcnow()
    )
    return Response(status_code=204)


@router.post("/{feature_key}/reset", response_model=CustomerEntitlementRead)
async def reset_usage(
    customer_key: str, feature_key: str, data: UsageResetIn, principal: Admin, session: WriteSession,
    idem: Idempotent,
) -> Response:
    """Start a new usage period now for a metered ad-hoc entitlement: usage starts from zero,
    grants and included units roll over as at a period boundary, and the ended period's
    overage carries in when asked. Answers the entitlement's new row (a new `id`)."""
    view = await usage_resets.reset_feature(
        session, principal.tenant_id, customer_key, feature_key, retain_anchor=data.retain_anchor,
        preserve_overage=data.preserve_overage, actor=principal.key_id, at=utcnow(),
    )
    return await idem.respond(200, entitlement_read(view))


@router.put("/{feature_key}/override", response_model=CustomerEntitlementRead)
async def put_override(
    customer_key: str, feature_key: str, data: OverrideIn, principal: Admin, session: WriteSession
) -> CustomerEntitlementRead:
    """Replace plan values for one feature of one customer; kept across plan changes."""
    view = await service.set_override(
        session, principal.tenant_id, customer_key, feature_key, data,
        actor=principal.key_id, at=utcnow(),
    )
    return entitlement_read(view)


@router.delete("/{feature_key}/override", status_code=204)
async def delete_override(
    customer_key: str, feature_key: str, principal: Admin, session: WriteSession
) -> Response:
    """Give the feature back to the plan."""
    await service.remove_override(
        session, principal.tenant_id, customer_key, feature_key, actor=principal.key_id, at=utcnow()
    )
    return Response(status_code=204)
