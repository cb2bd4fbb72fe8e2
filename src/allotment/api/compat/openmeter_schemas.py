"""OpenMeter's request and response shapes, and their mapping to ours.

Requests are lenient like OpenMeter's own server: unknown fields are ignored and both camelCase
and snake_case names are read. Responses use OpenMeter's names (`slug`, `eventType`,
`usageAttribution.subjectKeys`, ...) and leave out fields that have no value.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from allotment import codec
from allotment.customers.models import Customer, Subject
from allotment.customers.service import CustomerView
from allotment.entitlements.check import usage_period
from allotment.entitlements.engine import Kind
from allotment.entitlements.features import FeatureView
from allotment.entitlements.models import CustomerEntitlement, GrantRecord
from allotment.entitlements.periods import Interval, UsagePeriod, boundary, period_at
from allotment.entitlements.standing import recurrence_of
from allotment.entitlements.state import EntitlementState
from allotment.metering.events import EventView
from allotment.metering.models import Meter
from allotment.metering.query import MAX_FILTER_KEYS, Row
from allotment.metering.windows import WindowSize
from allotment.types import (
    Instant,
    LargeQuantity,
    Metadata,
    PositiveQuantity,
    TextMetadata,
    from_micros,
)


class _In(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class MeterCreateIn(_In):
    slug: str
    aggregation: str
    event_type: str
    value_property: str | None = None
    group_by: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    event_from: Instant | None = None
    metadata: TextMetadata | None = None


class MeterUpdateIn(_In):
    name: str | None = None
    description: str | None = None
    group_by: dict[str, str] | None = None
    metadata: TextMetadata | None = None


class MeterQueryIn(_In):
    """The POST body of a meter query; the GET form is read into the same model."""

    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None
    window_size: WindowSize | None = None
    window_time_zone: str | None = None  # UTC
    subject: list[str] | None = Field(default=None, max_length=MAX_FILTER_KEYS)
    filter_customer_id: list[str] | None = Field(default=None, max_length=MAX_FILTER_KEYS)
    filter_group_by: dict[str, Any] | None = None
    advanced_meter_group_by_filters: dict[str, Any] | None = None
    group_by: list[str] | None = None


class SubjectUpsertIn(_In):
    key: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    stripe_customer_id: str | None = Field(default=None, max_length=256)
    current_period_start: Instant | None = None
    current_period_end: Instant | None = None


class UsageAttributionIn(_In):
    subject_keys: list[str]


class AddressIn(_In):
    country: str | None = None
    postal_code: str | None = None
    state: str | None = None
    city: str | None = None
    line1: str | None = None
    line2: str | None = None
    phone_number: str | None = None


class CustomerIn(_In):
    """CustomerCreate and CustomerReplaceUpdate: the same shape, `name` required."""

    name: str
    key: str | None = None
    description: str | None = None
    metadata: TextMetadata | None = None
    usage_attribution: UsageAttributionIn | None = None
    primary_email: str | None = None
    currency: str | None = None
    billing_address: AddressIn | None = None

    def address(self) -> dict[str, str] | None:
        return None if self.billing_address is None else self.billing_address.model_dump(exclude_none=True)


# Our field names as OpenMeter clients know them, for error messages.
METER_FIELDS = {"key": "slug", "event_from": "eventFrom"}
CUSTOMER_FIELDS = {"email": "primaryEmail", "subject_keys": "usageAttribution.subjectKeys"}
QUERY_FIELDS = {"customer": "filterCustomerId"}


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def meter_out(meter: Meter) -> dict[str, Any]:
    return _compact(
        {
            "id": meter.id,
            "slug": meter.key,
            "name": meter.name,
            "description": meter.description,
            "aggregation": meter.aggregation,
            "eventType": meter.event_type,
            "valueProperty": meter.value_property,
            "groupBy": meter.group_by or {},
            "eventFrom": meter.event_from,
            "metadata": meter.metadata_ or {},
            "createdAt": meter.created_at,
            "updatedAt": meter.updated_at,
            "deletedAt": meter.deleted_at,
        }
    )


def customer_out(view: CustomerView) -> dict[str, Any]:
    c = view.customer
    return _compact(
        {
            "id": c.id,
            "key": c.key,
            "name": c.name,
            "description": c.description,
            "metadata": c.metadata_ or {},
            "usageAttribution": {"subjectKeys": view.subject_keys},
            "primaryEmail": c.email,
            "currency": c.currency,
            "billingAddress": _address_out(c.billing_address),
            "createdAt": c.created_at,
            "updatedAt": c.updated_at,
            "deletedAt": c.deleted_at,
        }
    )


def _address_out(address: dict[str, str] | None) -> dict[str, str] | None:
    return None if address is None else {to_camel(name): value for name, value in address.items()}


def subject_out(subject: Subject) -> dict[str, Any]:
    return _compact(
        {
            "id": subject.id,
            "key": subject.key,
            "displayName": subject.display_name,
            "metadata": subject.metadata_,
            "currentPeriodStart": subject.current_period_start,
            "currentPeriodEnd": subject.current_period_end,
            "stripeCustomerId": subject.stripe_customer_id,
            "createdAt": subject.created_at,
            "updatedAt": subject.updated_at,
        }
    )


def ingested_event_out(view: EventView, customer_ids: dict[str, str]) -> dict[str, Any]:
    e = view.event
    received = from_micros(e.received_us)
    event = _compact(
        {
            "id": e.event_id,
            "source": e.source,
            "specversion": "1.0",
            "type": e.type,
            "subject": e.subject,
            "time": from_micros(e.time_us),
            "data": view.data,
        }
    )
    return _compact(
        {
            "event": event,
            "customerId": customer_ids.get(view.customer) if view.customer else None,
            "validationError": "; ".join(view.unreadable) or None,
            "ingestedAt": received,
            "storedAt": received,
        }
    )


def row_out(row: Row, customer_ids: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": codec.optional_number(row.value),
        "windowStart": from_micros(row.window_start_us),
        "windowEnd": from_micros(row.window_end_us),
        "subject": row.subject,
        "groupBy": row.groups,
    }
    if row.customer is not None:
        out["customerId"] = customer_ids.get(row.customer, row.customer)
    return out


# --- features and entitlements -----------------------------------------------------------------


class FeatureCreateIn(_In):
    key: str
    name: str | None = None
    metadata: TextMetadata | None = None
    meter_slug: str | None = None
    meter_group_by_filters: dict[str, str] | None = None
    advanced_meter_group_by_filters: dict[str, Any] | None = None
    unit_cost: dict[str, Any] | None = None


class UsagePeriodIn(_In):
    interval: str
    anchor: Instant | None = None


class IssueIn(_In):
    amount: LargeQuantity
    priority: int | None = Field(default=None, ge=1, le=255)


MAX_EXPIRY_COUNT = 100_000


class ExpirationIn(_In):
    duration: str
    count: int = Field(ge=1, le=MAX_EXPIRY_COUNT)


class GrantCreateIn(_In):
    amount: PositiveQuantity
    priority: int = Field(default=1, ge=1, le=255)
    effective_at: Instant
    expiration: ExpirationIn | None = None
    min_rollover_amount: LargeQuantity = Decimal(0)
    max_rollover_amount: LargeQuantity | None = None  # v2: the grant's amount
    metadata: TextMetadata | None = None
    annotations: Metadata | None = None
    recurrence: UsagePeriodIn | None = None


class ResetIn(_In):
    """OpenMeter's ResetEntitlementUsageInput."""

    effective_at: datetime | None = None
    retain_anchor: StrictBool | None = None
    preserve_overage: StrictBool | None = None


class EntitlementCreateIn(_In):
    """Every kind in one model: OpenMeter tells them apart by `type`; fields of another kind
    are ignored, as OpenMeter does."""

    type: str
    feature_key: str | None = None
    feature_id: str | None = None
    metadata: TextMetadata | None = None
    usage_period: UsagePeriodIn | None = None
    # metered
    is_soft_limit: StrictBool = False
    measure_usage_from: str | None = None
    preserve_overage_at_reset: StrictBool = False
    issue_after_reset: LargeQuantity | None = None
    issue_after_reset_priority: int | None = Field(default=None, ge=1, le=255)
    issue: IssueIn | None = None
    grants: list[GrantCreateIn] | None = None
    # static
    config: str | None = None


# Our field names as OpenMeter clients know them, for error messages.
FEATURE_FIELDS = {"meter": "meterSlug", "meter_group_filter": "meterGroupByFilters"}
ENTITLEMENT_FIELDS = {
    "feature": "featureKey",
    "included": "issueAfterReset",
    "usage_period": "usagePeriod.interval",
    "usage_anchor": "usagePeriod.anchor",
    "starts_at": "measureUsageFrom",
}


def feature_out(view: FeatureView) -> dict[str, Any]:
    f = view.feature
    return _compact(
        {
            "id": f.id,
            "key": f.key,
            "name": f.name,
            "metadata": f.metadata_ or {},
            "meterSlug": view.meter_key,
            "meterGroupByFilters": f.meter_group_filter or None,
            # As OpenMeter answers: the same filters, each as the `$eq` it means.
            "advancedMeterGroupByFilters": {k: {"$eq": v} for k, v in (f.meter_group_filter or {}).items()} or None,
            "createdAt": f.created_at,
            "updatedAt": f.updated_at,
            "archivedAt": f.archived_at,
        }
    )


_ISO_INTERVAL = {"DAY": "P1D", "WEEK": "P1W", "MONTH": "P1M", "YEAR": "P1Y"}


def entitlement_out(
    row: CustomerEntitlement, customer: Customer, feature_key: str, *, at: datetime
) -> dict[str, Any]:
    """OpenMeter's EntitlementV2 of one of our rows; seats show as metered (a gauge)."""
    ended = row.active_to is not None and row.active_to <= at
    body: dict[str, Any] = {
        "id": row.public_id,  # the same across usage resets
        "type": "metered" if row.kind in (Kind.METERED, Kind.SEATS) else row.kind,
        "featureKey": feature_key,
        "featureId": row.feature_id,
        "customerId": customer.id,
        "customerKey": customer.key,
        "metadata": row.metadata_ or {},
        "activeFrom": row.active_from,
        "activeTo": row.active_to,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "deletedAt": row.active_to if ended else None,
    }
    if row.kind == Kind.STATIC:
        body["config"] = json.dumps(row.config or {})
    if row.kind == Kind.METERED:
        body |= _metered_out(row, at)
    return _compact(body)


def entitlement_v1_out(
    row: CustomerEntitlement, customer: CustomerView, feature_key: str, *, at: datetime
) -> dict[str, Any]:
    """The v1 Entitlement: the same, held by a subject (the customer's first, else its key)."""
    body = entitlement_out(row, customer.customer, feature_key, at=at)
    for v2_only in ("customerId", "customerKey", "issue"):
        body.pop(v2_only, None)
    body["subjectKey"] = next(iter(customer.subject_keys), customer.customer.key)
    return body


def _metered_out(row: CustomerEntitlement, at: datetime) -> dict[str, Any]:
    included = row.included or Decimal(0)
    period = usage_period(row)
    start, end = period_at(period, at)
    if row.reset_overage is not None:  # begun by a usage reset: its first period begins there
        start = max(start, row.active_from)
    out: dict[str, Any] = {
        "isSoftLimit": row.hard_limit is None,
        "preserveOverageAtReset": row.overage_at_reset == "carry",
        "measureUsageFrom": row.active_from,
        "lastReset": max(start, row.active_from),
        "currentUsagePeriod": {"from": start, "to": end} if end is not None else None,
    }
    if included > 0:
        out["issueAfterReset"] = codec.quantity_number(included)
        out["issue"] = {"amount": codec.quantity_number(included)}
    if period.interval in _ISO_INTERVAL:
        out["usagePeriod"] = _period_out(period.interval, period.anchor)
    return out


def _period_out(interval: Interval, anchor: datetime) -> dict[str, Any]:
    return {"interval": str(interval), "intervalISO": _ISO_INTERVAL[interval], "anchor": anchor}


def value_out(state: EntitlementState) -> dict[str, Any]:
    """OpenMeter's EntitlementValue: access, and the balance of counted kinds.

    `totalAvailableGrantAmount` is what the period makes available: included units plus live
    grants (the effective soft limit). `usage` is the period's own usage: overage carried in
    from the previous period (`preserveOverageAtReset`) lowers the balance but is not usage
    of this period, as in OpenMeter (the native API counts it in the usage).
    """
    kind = state.row.kind
    if kind == Kind.BOOLEAN:
        return {"hasAccess": state.has_access}
    if kind == Kind.STATIC:
        return {"hasAccess": state.has_access, "config": json.dumps(state.config or {})}
    return _compact(
        {
            "hasAccess": state.has_access,
            "balance": codec.optional_number(state.balance),
            "usage": codec.optional_number(period_usage(state)),
            "overage": codec.optional_number(state.overage),
            "totalAvailableGrantAmount": codec.optional_number(state.soft_limit),
        }
    )


def period_usage(state: EntitlementState) -> Decimal | None:
    """The period's own usage: without the overage carried into it."""
    if state.usage is None or not state.carried:
        return state.usage
    return max(state.usage - state.carried, Decimal(0))


def value_v2_out(state: EntitlementState) -> dict[str, Any]:
    """The v2 value adds, for metered entitlements, what each grant still holds."""
    out = value_out(state)
    if state.row.kind == Kind.METERED:
        out["grantBalances"] = {g.grant.id: codec.quantity_number(g.balance) for g in state.grants}
    return out


# --- grants ------------------------------------------------------------------------------------


GRANT_FIELDS = {
    "amount": "amount",
    "priority": "priority",
    "effective_at": "effectiveAt",
    "expires_at": "expiration",
    "min_rollover": "minRolloverAmount",
    "max_rollover": "maxRolloverAmount",
    "metadata": "metadata",
}


def grant_out(record: GrantRecord, entitlement_id: str, at: datetime) -> dict[str, Any]:
    every = recurrence_of(record)
    return _compact(
        {
            "id": record.id,
            "entitlementId": entitlement_id,
            "amount": codec.quantity_number(record.amount),
            "priority": record.priority,
            "effectiveAt": record.effective_at,
            "expiresAt": record.expires_at,
            "expiration": expiration_of(record),
            "minRolloverAmount": codec.quantity_number(record.min_rollover),
            "maxRolloverAmount": codec.optional_number(record.max_rollover),
            "metadata": record.metadata_ or {},
            "annotations": record.annotations,
            "createdAt": record.created_at,
            "updatedAt": record.voided_at or record.created_at,
            "voidedAt": record.voided_at,
            "recurrence": None if every is None else _period_out(every.interval, every.anchor),
            "nextRecurrence": None if every is None else _next_recurrence(record, every, at),
        }
    )


# A grant's `expiration {duration, count}`: fixed steps, or calendar units from `effectiveAt`.
EXPIRY_STEPS = {"HOUR": timedelta(hours=1), "DAY": timedelta(days=1), "WEEK": timedelta(weeks=1)}
EXPIRY_CALENDAR = {"MONTH": Interval.MONTH, "YEAR": Interval.YEAR}
_UTC = ZoneInfo("UTC")
_ROUGHLY = {  # largest first
    "YEAR": timedelta(days=365.2425), "MONTH": timedelta(days=30.436875),
    "WEEK": timedelta(weeks=1), "DAY": timedelta(days=1), "HOUR": timedelta(hours=1),
}

def expiry(effective: datetime, duration: str, count: int) -> datetime:
    """When a grant effective at `effective` expires (a month from Jan 31 is Feb's last day)."""
    if duration in EXPIRY_STEPS:
        return effective + count * EXPIRY_STEPS[duration]
    return boundary(UsagePeriod(EXPIRY_CALENDAR[duration], effective, _UTC), count)


def expiration_of(record: GrantRecord) -> dict[str, Any] | None:
    """The `expiration` the grant was made with, as sent; for one made with an expiry time
    instead (natively), the one that gives it in the largest unit that does exactly."""
    if record.expires_at is None:
        return None
    if record.expiration is not None:
        return dict(record.expiration)
    span = record.expires_at - record.effective_at
    for duration, rough in _ROUGHLY.items():
        estimate = round(span / rough)
        for count in range(max(estimate - 1, 1), min(estimate + 1, MAX_EXPIRY_COUNT) + 1):
            try:
                if expiry(record.effective_at, duration, count) == record.expires_at:
                    return {"duration": duration, "count": count}
            except (OverflowError, ValueError):
                continue
    return None


def _next_recurrence(record: GrantRecord, every: UsagePeriod, at: datetime) -> datetime | None:
    """When the grant next starts over after `at`, while it has not ended by then."""
    upcoming = period_at(every, max(at, record.effective_at))[1]
    ends = [t for t in (record.expires_at, record.voided_at) if t is not None]
    return upcoming if upcoming is not None and all(upcoming < t for t in ends) else None
