"""OpenMeter's request and response shapes, and their mapping to ours.

Requests are lenient like OpenMeter's own server: unknown fields are ignored and both camelCase
and snake_case names are read. Responses use OpenMeter's names (`slug`, `eventType`,
`usageAttribution.subjectKeys`, ...) and leave out fields that have no value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from allotment.customers.models import Subject
from allotment.customers.service import CustomerView
from allotment.metering.aggregation import json_number
from allotment.metering.events import EventView
from allotment.metering.models import Meter
from allotment.metering.query import Row
from allotment.metering.windows import WindowSize
from allotment.types import from_micros


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


class MeterUpdateIn(_In):
    name: str | None = None
    description: str | None = None
    group_by: dict[str, str] | None = None


class MeterQueryIn(_In):
    """The POST body of a meter query; the GET form is read into the same model."""

    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    window_size: WindowSize | None = None
    window_time_zone: str | None = None  # UTC
    subject: list[str] | None = None
    filter_customer_id: list[str] | None = None
    filter_group_by: dict[str, Any] | None = None
    advanced_meter_group_by_filters: dict[str, Any] | None = None
    group_by: list[str] | None = None


class SubjectUpsertIn(_In):
    key: str = Field(min_length=1, max_length=256)
    display_name: str | None = None
    metadata: dict[str, Any] | None = None


class UsageAttributionIn(_In):
    subject_keys: list[str]


class CustomerIn(_In):
    """CustomerCreate and CustomerReplaceUpdate: the same shape, `name` required."""

    name: str
    key: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    usage_attribution: UsageAttributionIn | None = None
    primary_email: str | None = None
    currency: str | None = None


# Our field names as OpenMeter clients know them, for error messages.
METER_FIELDS = {"key": "slug"}
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
            "createdAt": meter.created_at,
            "updatedAt": meter.updated_at,
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
            "createdAt": c.created_at,
            "updatedAt": c.updated_at,
        }
    )


def subject_out(subject: Subject) -> dict[str, Any]:
    return _compact(
        {
            "id": subject.id,
            "key": subject.key,
            "displayName": subject.display_name,
            "metadata": subject.metadata_,
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
            "ingestedAt": received,
            "storedAt": received,
        }
    )


def row_out(row: Row, customer_ids: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": json_number(row.value),
        "windowStart": from_micros(row.window_start_us),
        "windowEnd": from_micros(row.window_end_us),
        "subject": row.subject,
        "groupBy": row.groups,
    }
    if row.customer is not None:
        out["customerId"] = customer_ids.get(row.customer, row.customer)
    return out
