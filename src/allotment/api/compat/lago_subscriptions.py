"""Lago subscriptions (`/subscriptions`, keyed by `external_id`).

Lago events name the subscription they belong to; its `external_id` is made a subject key of
the customer, so those events are the customer's usage. `plan_code` is the key of one of our
plans (a 404 naming it when there is none) and starts our own subscription to it, which
provisions the plan's entitlements. Terminating ends that subscription at once.

`billing_time` is kept as the native subscription's billing anchor, which aligns its periods:
`anniversary` (midnight of the day it starts) or `calendar`, Lago's default (an instant before
it that begins a week, a month and a year at once, so that periods follow the calendar).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from pydantic import BaseModel, ConfigDict, Field

from allotment.api.compat.lago_http import Page, PerPage, at, error, invalid, lago_router, meta
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import external_subscriptions as external
from allotment.entitlements.models import Subscription
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
    billing_time: str | None = None


BillingTime = Literal["calendar", "anniversary"]
# Mondays that are also the 1st of January: periods anchored on one begin on Mondays, on the
# 1st of each month and on January 1st, whatever the plan's interval (the later one unless
# the subscription starts before it).
_CALENDAR = (datetime(2001, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC))


def _midnight(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def billing_anchor(billing_time: BillingTime, starts_at: datetime) -> datetime:
    """Lago's periods: an anniversary's begin at midnight of the day the subscription starts;
    a calendar anchor lies before that day, which tells the two apart when read back."""
    day = _midnight(starts_at)
    if billing_time == "anniversary":
        return day
    return _CALENDAR[0] if _CALENDAR[0] < day else _CALENDAR[1]


def billing_time(native: Subscription | None) -> BillingTime:
    """As asked (a subscription anchored when it started, as before billing_time was kept, is
    an anniversary one)."""
    if native is None or native.billing_anchor < _midnight(native.starts_at):
        return "calendar"
    return "anniversary"


class SubscriptionBody(BaseModel):
    subscription: LagoSubscription


def subscription_out(view: external.ExternalView) -> dict[str, Any]:
    row, native, now = view.row, view.native, utcnow()
    started = native.starts_at if native is not None else row.created_at
    return {
        "lago_id": row.id, "external_id": row.external_id, "lago_customer_id": row.customer_id,
        "external_customer_id": view.customer_key, "plan_code": row.plan_key, "name": row.name,
        "status": view.status_at(now), "billing_time": billing_time(native),
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
    if data.billing_time not in (None, "calendar", "anniversary"):
        return invalid({"billing_time": ["value_is_invalid"]})
    now = utcnow()
    starts_at = _starts(data.subscription_at) or now
    view, _ = await external.start(
        session, principal.tenant_id, system=SYSTEM, external_id=data.external_id or "",
        customer_key=data.external_customer_id or "", plan_key=data.plan_code or "", name=data.name,
        starts_at=starts_at, actor=principal.key_id, at=now,
        billing_anchor=billing_anchor("anniversary" if data.billing_time == "anniversary" else "calendar", starts_at),
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
