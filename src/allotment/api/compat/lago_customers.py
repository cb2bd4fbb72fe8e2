"""Lago customers (`/customers`, keyed by `external_id`) and their current usage.

A customer created here is a native customer whose key is the `external_id`; that id is also
made one of its subject keys, so events sent with `external_customer_id` are its usage.
`email`, `currency`, `name`, `metadata` and the address (the customer's billing address) are
kept; Lago's other fields (shipping address, billing configuration, taxes, ...) are not
modelled and are not answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.api.compat.lago_http import Page, PerPage, at, lago_router, meta
from allotment.api.compat.lago_metrics import aggregation_type
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.customers.schemas import KEY_PATTERN, CustomerCreate, CustomerUpdate
from allotment.entitlements import external_subscriptions, features, plans, references
from allotment.entitlements.engine import Kind
from allotment.entitlements.periods import UsagePeriod, period_at
from allotment.errors import AlreadyExists, NotFound, ValidationFailed
from allotment.metering import meters
from allotment.metering import query as meter_query
from allotment.metering.models import Meter
from allotment.tenancy.service import Principal
from allotment.types import to_micros, utcnow

router = lago_router()
SYSTEM = "lago"
_SECOND = timedelta(seconds=1)


class _Metadata(BaseModel):
    key: str = Field(min_length=1, max_length=256)
    value: str | None = None


class LagoCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Lago's many billing fields are not modelled

    # It becomes the customer's key: refused here, under the name the client sent.
    external_id: str = Field(min_length=1, max_length=256, pattern=KEY_PATTERN)
    name: str | None = Field(default=None, max_length=256)
    email: str | None = Field(default=None, max_length=320)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    metadata: list[_Metadata] | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    zipcode: str | None = None
    country: str | None = None
    phone: str | None = None

    def address_parts(self) -> dict[str, str]:
        """The parts sent, under the billing address's names (null: left as it is)."""
        return {ours: value for lago, ours in _ADDRESS.items() if (value := getattr(self, lago)) is not None}


# Lago's address fields -> the parts of a customer's billing address.
_ADDRESS = {"address_line1": "line1", "address_line2": "line2", "city": "city", "state": "state",
            "zipcode": "postal_code", "country": "country", "phone": "phone_number"}


class CustomerBody(BaseModel):
    customer: LagoCustomer


def customer_out(view: customers.CustomerView) -> dict[str, Any]:
    c = view.customer
    return {
        "lago_id": c.id, "external_id": c.key, "name": c.name, "email": c.email, "currency": c.currency,
        "created_at": at(c.created_at), "updated_at": at(c.updated_at),
        "timezone": None, "applicable_timezone": "UTC",
        **{lago: (c.billing_address or {}).get(ours) for lago, ours in _ADDRESS.items()},
        "metadata": [{"lago_id": None, "key": k, "value": None if v is None else str(v), "display_in_invoice": False}
                     for k, v in (c.metadata_ or {}).items()],
    }


@router.post("/v1/customers", summary="Create or update a customer by external_id (Lago)")
async def upsert_customer(body: CustomerBody, principal: Admin, session: WriteSession) -> Json:
    data, now = body.customer, utcnow()
    metadata = None if data.metadata is None else {m.key: m.value for m in data.metadata}
    try:
        current = await customers.find(session, principal.tenant_id, data.external_id)
    except NotFound:
        created = await _created(session, principal, data, metadata, now)
        if created is not None:
            return Json({"customer": customer_out(created)})
        current = await customers.find(session, principal.tenant_id, data.external_id)
    # The client sends every field, null when its caller left it out: null keeps the value.
    changes: dict[str, Any] = data.model_dump(exclude_none=True, include={"name", "email", "currency"})
    if metadata is not None:
        changes["metadata"] = metadata
    if parts := data.address_parts():
        changes["billing_address"] = (current.billing_address or {}) | parts
    view = await customers.update(session, principal.tenant_id, current.key, CustomerUpdate.model_validate(changes),
                                  actor=principal.key_id, at=now)
    return Json({"customer": customer_out(view)})


async def _created(
    session: AsyncSession, principal: Principal, data: LagoCustomer, metadata: dict[str, str | None] | None,
    at: datetime,
) -> customers.CustomerView | None:
    """The customer made for `data`, or None when a concurrent upsert made it first (both found
    none): this one then updates it, as an upsert sent after that one would. The savepoint
    keeps the transaction usable after the unique key refused the second create."""
    try:
        async with session.begin_nested():
            return await customers.create(session, principal.tenant_id, CustomerCreate.model_validate({
                "key": data.external_id, "name": data.name or data.external_id, "email": data.email,
                "currency": data.currency, "billing_address": data.address_parts() or None,
                "metadata": metadata or {}, "subject_keys": [data.external_id],
            }), actor=principal.key_id, at=at)
    except AlreadyExists:
        return None


@router.get("/v1/customers/{external_id}", summary="One customer (Lago)")
async def get_customer(external_id: str, principal: Reader, session: ReadSession) -> Json:
    return Json({"customer": customer_out(await customers.get(session, principal.tenant_id, external_id))})


@router.get("/v1/customers", summary="Customers, page by page (Lago)")
async def list_customers(principal: Reader, session: ReadSession, page: Page = 1, per_page: PerPage = 20) -> Json:
    views = await customers.list_(session, principal.tenant_id, after=None, limit=per_page,
                                  offset=(page - 1) * per_page)
    total = await customers.count(session, principal.tenant_id)
    return Json({"customers": [customer_out(v) for v in views], "meta": meta(page, per_page, total)})


@router.delete("/v1/customers/{external_id}", summary="Delete a customer (Lago)")
async def delete_customer(external_id: str, principal: Admin, session: WriteSession) -> Json:
    """A customer with a live subscription is refused (terminate it first)."""
    now = utcnow()
    view = await customers.get(session, principal.tenant_id, external_id)
    await references.refuse_customer_in_use(session, principal.tenant_id, view.customer.id, view.customer.key, at=now)
    await customers.delete_(session, principal.tenant_id, view.customer.key, actor=principal.key_id, at=now)
    return Json({"customer": customer_out(view)})


@router.get("/v1/customers/{external_id}/current_usage", summary="Usage of the current period (Lago)")
async def current_usage(
    request: Request, external_id: str, external_subscription_id: str, principal: Reader, session: ReadSession,
    billable_metric_code: str | None = None, filter_by_metric_code: str | None = None,
    charge_id: str | None = None, filter_by_charge_id: str | None = None,
    charge_code: str | None = None, filter_by_charge_code: str | None = None,
    filter_by_group: str | None = None, full_usage: bool = False,
) -> Json:
    """Units per billable metric since the start of the subscription's billing period (since it
    started, with `full_usage`), for an active subscription, narrowed as Lago narrows it: to one
    charge (`charge_id`, else `charge_code`), else to one metric (`billable_metric_code`), and
    to events whose properties have the values of `group[<key>]` (or `filter_by_group`, the same
    as JSON). Pricing is not modelled yet: every amount is 0, in the customer's currency."""
    group = _group(request, filter_by_group)
    customer = await customers.find(session, principal.tenant_id, external_id)
    sub = await external_subscriptions.get(session, principal.tenant_id, SYSTEM, external_subscription_id)
    now = utcnow()
    # As Lago: a pending or terminated subscription has no current period to count.
    if sub.row.customer_id != customer.id or sub.status_at(now) != "active":
        raise NotFound("subscription", external_subscription_id)
    start, end = await _period(session, principal.tenant_id, sub, now)
    since = sub.native.starts_at if full_usage and sub.native is not None else start
    currency = customer.currency or "USD"
    charges = []
    priced = await _charges_by_metric(session, principal.tenant_id, sub)
    wanted = _Wanted(charge_id or filter_by_charge_id, charge_code or filter_by_charge_code,
                     billable_metric_code or filter_by_metric_code)
    for meter in await _metrics(session, principal.tenant_id, sub):
        charge = priced.get(meter.id) or {"lago_id": meter.id, "charge_model": "standard"}
        if not wanted.keeps(meter, charge):
            continue
        units = Decimal(0)
        if all(key in (meter.group_by or {}) for key in group):  # else: its events are not told apart by them
            q = meter_query.MeterQuery(start_us=to_micros(since), end_us=to_micros(now) + 1,
                                       subjects=[external_subscription_id], filter_group_by=group)
            rows = await meter_query.query(session, principal.tenant_id, meter, q)
            units = sum((r.value or Decimal(0) for r in rows), Decimal(0))
        charges.append(_charge(meter, units, currency, charge))
    return Json({"customer_usage": {
        "from_datetime": at(start), "to_datetime": at(None if end is None else end - _SECOND),  # its last second
        "issuing_date": (end or now).date().isoformat(),
        "lago_invoice_id": None, "currency": currency, "amount_cents": 0, "total_amount_cents": 0,
        "taxes_amount_cents": 0, "charges_usage": charges,
    }})


@dataclass
class _Wanted:
    """The charges a usage request asks for: as Lago, a charge id wins over a charge code,
    which wins over a metric code; none of them, every charge."""

    charge_id: str | None
    charge_code: str | None
    metric_code: str | None

    def keeps(self, meter: Meter, charge: dict[str, Any]) -> bool:
        if self.charge_id:
            return bool(charge["lago_id"] == self.charge_id)
        if self.charge_code:
            return bool(charge.get("code") == self.charge_code)
        return not self.metric_code or meter.key == self.metric_code


_GROUP_KEY = re.compile(r"^group\[(.+)\]$")


def _group(request: Request, filter_by_group: str | None) -> dict[str, list[str]]:
    """`group[<key>]=<value>` (repeated for several values), else `filter_by_group`: JSON text
    mapping each key to a value or a list of them."""
    out: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if match := _GROUP_KEY.match(name):
            out.setdefault(match.group(1), []).append(value)
    if out or filter_by_group is None:
        return out
    try:
        sent = codec.loads(filter_by_group.encode())
    except (msgspec.DecodeError, RecursionError):
        sent = None
    if not isinstance(sent, dict) or not all(isinstance(v, str | list) for v in sent.values()):
        raise ValidationFailed.on("filter_by_group", "must be a JSON object of property values")
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in sent.items()}


async def _period(session: AsyncSession, tenant_id: str, sub: external_subscriptions.ExternalView,
                  now: datetime) -> tuple[datetime, datetime | None]:
    """The billing period holding `now`; the first one begins when the subscription does, as in Lago."""
    native = sub.native
    if native is None:
        return sub.row.created_at, None
    plan = await plans.by_id(session, tenant_id, native.plan_id)
    start, end = period_at(UsagePeriod(plans.billing_period(plan), native.billing_anchor,
                                       ZoneInfo(native.time_zone)), now)
    return max(start, native.starts_at), end


async def _metrics(session: AsyncSession, tenant_id: str, sub: external_subscriptions.ExternalView) -> list[Meter]:
    """The plan's billable metrics: the meters of its metered features, as Lago lists the
    plan's charges only (usage of other metrics is not the subscription's to bill)."""
    everything = await meters.list_(session, tenant_id, after=None, limit=1000)
    if sub.native is None:
        return everything
    plan = await plans.by_id(session, tenant_id, sub.native.plan_id)
    metered = [row.feature_id for row in await plans.entitlements_of(session, plan) if row.kind == Kind.METERED]
    wanted = {(await features.get(session, tenant_id, feature_id, archived=True)).meter_id for feature_id in metered}
    return [m for m in everything if m.id in wanted]


async def _charges_by_metric(
    session: AsyncSession, tenant_id: str, sub: external_subscriptions.ExternalView,
) -> dict[str, dict[str, Any]]:
    """The charges of a plan made through Lago, by metric (its first charge on each)."""
    if sub.native is None:
        return {}
    document = (await plans.by_id(session, tenant_id, sub.native.plan_id)).external_document or {}
    out: dict[str, dict[str, Any]] = {}
    for charge in document.get("charges", []):
        out.setdefault(charge["billable_metric_id"], charge)
    return out


def _charge(meter: Meter, units: Decimal, currency: str, priced: dict[str, Any]) -> dict[str, Any]:
    """`priced`: the plan's charge on the metric (its first, for a plan made through Lago)."""
    text = format(units.normalize(), "f") if units else "0"
    return {
        "units": text, "total_aggregated_units": text,
        "events_count": int(units) if meter.aggregation == "COUNT" else 0,
        "amount_cents": 0, "amount_currency": currency,
        "charge": {"lago_id": priced["lago_id"], "charge_model": priced["charge_model"],
                   "invoice_display_name": priced.get("invoice_display_name")},
        "billable_metric": {"lago_id": meter.id, "name": meter.name, "code": meter.key,
                            "aggregation_type": aggregation_type(meter.aggregation)},
        "filters": [], "grouped_usage": [],
    }
