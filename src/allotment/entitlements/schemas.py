"""API shapes of the entitlement catalogue (separate from the tables in models.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from allotment.entitlements.engine import Kind
from allotment.entitlements.periods import Interval

KEY_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
MAX_QUANTITY = Decimal(10) ** 32  # NUMERIC(38, 6) holds 32 integer digits


def json_quantity(value: Decimal) -> int | float:
    """Quantities are JSON numbers: integers when integral, else the nearest double."""
    return int(value) if value == value.to_integral_value() else float(value)


QuantityIn = Annotated[
    Decimal, Field(ge=0, lt=MAX_QUANTITY, decimal_places=6, allow_inf_nan=False)
]
QuantityOut = Annotated[Decimal, PlainSerializer(json_quantity, return_type=int | float)]
OverageAtReset = Literal["forgive", "carry"]
When = Literal["now", "period_end"]


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone (e.g. 'Europe/Paris')") from None
    return value


class EntitlementValues(BaseModel):
    """What an entitlement allows; which fields apply depends on `kind`."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    has_access: bool | None = Field(default=None, description="boolean: access (default true).")
    config: dict[str, Any] | None = Field(default=None, description="static: the configuration.")
    usage_period: Interval | None = Field(default=None, description="metered (default MONTH).")
    included: QuantityIn | None = Field(default=None, description="metered, seats (default 0).")
    soft_limit: QuantityIn | None = Field(
        default=None, description="Past it usage is overdraft (default: included)."
    )
    hard_limit: QuantityIn | None = Field(default=None, description="Past it usage is denied.")
    overage_at_reset: OverageAtReset | None = Field(
        default=None, description="metered: forgive (default) or carry overage into the next period."
    )
    lease_ttl_seconds: int | None = Field(
        default=None, ge=1, le=366 * 86_400, description="seats: leases expire without heartbeat."
    )


class PlanEntitlementIn(EntitlementValues):
    feature: str = Field(description="Feature key.")


class OverrideIn(BaseModel):
    """Replaces the plan's values for one feature; fields left out keep the plan's value."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = None
    has_access: bool | None = None
    config: dict[str, Any] | None = None
    usage_period: Interval | None = None
    included: QuantityIn | None = None
    soft_limit: QuantityIn | None = None
    hard_limit: QuantityIn | None = None
    overage_at_reset: OverageAtReset | None = None
    lease_ttl_seconds: int | None = Field(default=None, ge=1, le=366 * 86_400)
    usage_anchor: AwareDatetime | None = None
    time_zone: str | None = None

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class AdhocIn(EntitlementValues):
    feature: str = Field(description="Feature key.")
    usage_anchor: AwareDatetime | None = Field(
        default=None, description="Where usage periods are aligned (default: now)."
    )
    time_zone: str = Field(default="UTC", description="IANA zone of usage periods.")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_time_zone(value)


class ValuesRead(BaseModel):
    kind: Kind
    has_access: bool
    config: dict[str, Any] | None
    usage_period: Interval | None
    included: QuantityOut | None
    soft_limit: QuantityOut | None
    hard_limit: QuantityOut | None
    overage_at_reset: OverageAtReset | None
    lease_ttl_seconds: int | None


class PlanEntitlementRead(ValuesRead):
    feature: str


class CustomerEntitlementRead(ValuesRead):
    id: str
    customer: str
    feature: str
    source: Literal["plan", "override", "adhoc"]
    subscription_id: str | None
    usage_anchor: datetime | None
    time_zone: str
    active_from: datetime
    active_to: datetime | None


# --- features ---------------------------------------------------------------------------------


class FeatureCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN, description="Slug, unique per tenant among live features.")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    unit: str | None = Field(default=None, max_length=64)
    meter: str | None = Field(default=None, description="Key of the meter that measures usage.")
    meter_group_filter: dict[str, str] = Field(
        default_factory=dict, description="Meter group name -> value: only that usage counts."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class FeatureUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=256)
    unit: str | None = Field(default=None, max_length=64)
    meter: str | None = None
    meter_group_filter: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None


class FeatureRead(BaseModel):
    id: str
    key: str
    name: str
    unit: str | None
    meter: str | None
    meter_group_filter: dict[str, str]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


# --- plans ------------------------------------------------------------------------------------


class PlanCreate(BaseModel):
    """A new plan (version 1), or the next draft version of an existing key."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN)
    name: str = Field(min_length=1, max_length=256)
    billing_interval: Literal["month", "year"] = "month"
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    next_tier: str | None = Field(default=None, description="Key of the plan to suggest next.")
    entitlements: list[PlanEntitlementIn] = Field(default_factory=list)


class PlanRead(BaseModel):
    id: str
    key: str
    version: int
    name: str
    billing_interval: Literal["month", "year"]
    currency: str | None
    next_tier: str | None
    status: Literal["draft", "published", "archived"]
    entitlements: list[PlanEntitlementRead]
    created_at: datetime
    published_at: datetime | None


# --- subscriptions ----------------------------------------------------------------------------


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(description="Customer key.")
    plan: str = Field(description="Plan key; its latest published version is used.")
    starts_at: AwareDatetime | None = Field(default=None, description="Default: now.")
    billing_anchor: AwareDatetime | None = Field(default=None, description="Default: starts_at.")
    time_zone: str = Field(default="UTC", description="IANA zone of billing and usage periods.")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_time_zone(value)


class ChangePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str = Field(description="Plan key; its latest published version is used.")
    at: When = "now"


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: When = "now"


class SubscriptionRead(BaseModel):
    id: str
    customer: str
    plan: str
    plan_version: int
    status: Literal["active", "scheduled", "canceled"]
    starts_at: datetime
    ends_at: datetime | None
    billing_anchor: datetime
    time_zone: str
    created_at: datetime


class AuditRead(BaseModel):
    id: str
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


# --- real-time checks -------------------------------------------------------------------------

MAX_CHECK_QUANTITY = Decimal(10) ** 12  # keeps counters, in millionths, within 64 bits


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, description="Customer key or id.")
    feature: str = Field(min_length=1, description="Feature key or id.")
    quantity: Annotated[
        Decimal, Field(gt=0, lt=MAX_CHECK_QUANTITY, decimal_places=6, allow_inf_nan=False)
    ] = Decimal(1)
    consume: bool = Field(default=False, description="Record the usage if allowed.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class CheckRead(BaseModel):
    decision: Literal["allow", "allow_overdraft", "deny"]
    reason: str
    usage: QuantityOut | None = None
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    balance: QuantityOut | None = None
    overage: QuantityOut | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    config: dict[str, Any] | None = None


class DenialRead(BaseModel):
    id: str
    customer_id: str
    feature_id: str
    at: datetime
    quantity: QuantityOut
    reason: str


class EntitlementStateRead(BaseModel):
    """Where a customer stands on one entitlement now, as a check of nothing would report."""

    feature: str
    kind: Kind
    source: Literal["plan", "override", "adhoc"]
    has_access: bool
    in_overdraft: bool = Field(description="Usage is past the soft limit.")
    config: dict[str, Any] | None = None
    usage: QuantityOut | None = None
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    balance: QuantityOut | None = None
    overage: QuantityOut | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
