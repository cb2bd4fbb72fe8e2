"""Lago subscriptions (`/subscriptions`, keyed by `external_id`).

Lago events name the subscription they belong to; its `external_id` is made a subject key of
the customer, so those events are the customer's usage. `plan_code` is the key of one of our
plans (a 404 naming it when there is none) and starts our own subscription to it, which
provisions the plan's entitlements. Terminating ends that subscription at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Response
from pydantic import BaseModel, ConfigDict, Field

from allotment.api.compat.lago_http import Page, PerPage, at, error, invalid, lago_router, meta
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import external_subscriptions as external
from allotment.errors import NotFound
from allotment.types import AwareInstant, as_utc, utcnow

router = lago_router()
SYSTEM = "lago"


class LagoSubscription(BaseModel):
    model_config = ConfigDict(extra="ignore")  # billing time, overrides, ...: not modelled

    external_customer_id: str | None = Field(default=None, min_length=1, max_length=256)
    plan_code: str | None = Field(default=None, min_length=1, max_length=64)
    external_id: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    subscription_at: AwareInstant | None = None


class SubscriptionBody(BaseModel):
    subscription: LagoSubscription


def subscription_out(view: external.ExternalView) -> dict[str, Any]:
    row, native, now = view.row, view.native, utcnow()
    started = native.starts_at if native is not None else row.created_at
    return {
        "lago_id": row.id, "external_id": row.external_id, "lago_customer_id": row.customer_id,
        "external_customer_id": view.customer_key, "plan_code": row.plan_key, "name": row.name,
        "status": view.status_at(now), "billing_time": "anniversary",
        "created_at": at(row.created_at), "subscription_at": at(started),
        "started_at": at(started) if started <= now else None,
        "terminated_at": at(row.terminated_at), "canceled_at": None,
        "ending_at": at(native.ends_at) if native is not None else None,
    }


@router.post("/v1/subscriptions", summary="Assign a plan to a customer (Lago)")
async def create_subscription(body: SubscriptionBody, principal: Admin, session: WriteSession) -> Response:
    data = body.subscription
    missing = {f: ["value_is_mandatory"] for f in ("external_customer_id", "plan_code", "external_id")
               if getattr(data, f) is None}
    if missing:
        return invalid(missing)
    view, _ = await external.start(
        session, principal.tenant_id, system=SYSTEM, external_id=data.external_id or "",
        customer_key=data.external_customer_id or "", plan_key=data.plan_code or "", name=data.name,
        starts_at=_starts(data.subscription_at), actor=principal.key_id, at=utcnow(),
    )
    return Json({"subscription": subscription_out(view)})


def _starts(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


@router.get("/v1/subscriptions/{external_id}", summary="One subscription (Lago)")
async def get_subscription(external_id: str, principal: Reader, session: ReadSession) -> Json:
    return Json({"subscription": subscription_out(await external.get(session, principal.tenant_id, SYSTEM,
                                                                      external_id))})


@router.get("/v1/subscriptions", summary="Subscriptions, page by page (Lago)")
async def list_subscriptions(
    principal: Reader, session: ReadSession, page: Page = 1, per_page: PerPage = 20,
    external_customer_id: Annotated[str | None, Query()] = None,
) -> Json:
    views, total = await external.list_(session, principal.tenant_id, SYSTEM, customer_key=external_customer_id,
                                        offset=(page - 1) * per_page, limit=per_page)
    return Json({"subscriptions": [subscription_out(v) for v in views], "meta": meta(page, per_page, total)})


@router.delete("/v1/subscriptions/{external_id}", summary="Terminate a subscription (Lago)")
async def terminate_subscription(external_id: str, principal: Admin, session: WriteSession) -> Response:
    try:
        view = await external.terminate(session, principal.tenant_id, SYSTEM, external_id,
                                        actor=principal.key_id, at=utcnow())
    except NotFound:
        return error(404, "subscription_not_found")
    return Json({"subscription": subscription_out(view)})
