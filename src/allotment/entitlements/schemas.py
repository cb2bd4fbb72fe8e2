"""API shapes of the entitlement catalogue (separate from the tables in models.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
)
from pydantic.config import JsonDict

from allotment.codec import nearest_number
from allotment.entitlements.engine import DEFAULT_PRIORITY, Kind
from allotment.entitlements.periods import Interval
from allotment.types import AwareInstant, LargeQuantity, Metadata, NotNull, PositiveQuantity

KEY_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
QuantityOut = Annotated[Decimal, PlainSerializer(nearest_number, return_type=int | float)]
OverageAtReset = Literal["forgive", "carry"]
When = Literal["now", "period_end"]
BillingInterval = Literal["week", "month", "year"]


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone (e.g. 'Europe/Paris')") from None
    return value


# The zones of this system's time zone database, listed in the schema: a name outside the list
# is refused, so a client generated from it never sends one.
TIME_ZONE_SCHEMA: JsonDict = {"enum": [*sorted(available_timezones())]}
TimeZoneName = Annotated[str, AfterValidator(check_time_zone),  # an IANA zone, e.g. "Europe/Paris"
                         Field(json_schema_extra=TIME_ZONE_SCHEMA)]


class EntitlementValues(BaseModel):
    """What an entitlement allows; which fields apply depends on `kind`."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    has_access: StrictBool | None = Field(default=None, description="boolean: access (default true).")
    config: dict[str, Any] | None = Field(default=None, description="static: the configuration.")
    usage_period: Interval | None = Field(default=None, description="metered (default MONTH).")
    included: LargeQuantity | None = Field(default=None, description="metered, seats (default 0).")
    soft_limit: LargeQuantity | None = Field(
        default=None, description="Past it usage is overdraft (default: included)."
    )
    hard_limit: LargeQuantity | None = Field(default=None, description="Past it usage is denied.")
    overage_at_reset: OverageAtReset | None = Field(
        default=None, description="metered: forgive (default) or carry overage into the next period."
    )
    included_rollover: LargeQuantity | None = Field(
        default=None,
        description="metered: unused included units carried into the next period, at most this many "
                    "(default none); they can be spent until that period ends.",
    )
    lease_ttl_seconds: int | None = Field(
        default=None, ge=1, le=366 * 86_400, description="seats: leases expire without heartbeat."
    )


class PlanEntitlementIn(EntitlementValues):
    feature: str = Field(description="Feature key.")


class OverrideIn(BaseModel):
    """Replaces the values the customer has for one feature: fields left out keep the current
    override's value, or the plan's when there is none."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = None
    has_access: StrictBool | None = None
    config: dict[str, Any] | None = None
    usage_period: Interval | None = None
    included: LargeQuantity | None = None
    soft_limit: LargeQuantity | None = None
    hard_limit: LargeQuantity | None = None
    overage_at_reset: OverageAtReset | None = None
    included_rollover: LargeQuantity | None = None
    lease_ttl_seconds: int | None = Field(default=None, ge=1, le=366 * 86_400)
    usage_anchor: AwareInstant | None = None
    time_zone: TimeZoneName | None = None


class AdhocIn(EntitlementValues):
    feature: str = Field(description="Feature key.")
    starts_at: AwareInstant | None = Field(
        default=None, description="Default: now. An instant in the past backdates it: a metered "
                                  "entitlement counts the usage its customer's events reported since then.",
    )
    usage_anchor: AwareInstant | None = Field(
        default=None, description="Where usage periods are aligned (default: now)."
    )
    time_zone: TimeZoneName = Field(default="UTC", description="IANA zone of usage periods.")


class UsageResetIn(BaseModel):
    """A new usage period for a metered ad-hoc entitlement, from now."""

    model_config = ConfigDict(extra="forbid")

    retain_anchor: StrictBool = Field(
        default=False, description="Keep the period grid: the new period ends at the next regular "
                                   "boundary. Default: periods are aligned on now from then on.",
    )
    preserve_overage: StrictBool | None = Field(
        default=None, description="Carry the ended period's overage into the new one "
                                  "(default: as the entitlement's overage_at_reset says).",
    )


class ValuesRead(BaseModel):
    kind: Kind
    has_access: bool
    config: dict[str, Any] | None
    usage_period: Interval | None
    included: QuantityOut | None
    soft_limit: QuantityOut | None
    hard_limit: QuantityOut | None
    overage_at_reset: OverageAtReset | None
    included_rollover: QuantityOut | None
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
    metadata: Metadata = Field(default_factory=dict)


class FeatureUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(default=None, min_length=1, max_length=256)
    unit: str | None = Field(default=None, max_length=64)
    meter: str | None = None
    meter_group_filter: dict[str, str] | None = None
    metadata: Annotated[Metadata | None, NotNull] = None


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
    description: str | None = Field(default=None, max_length=1024)
    billing_interval: BillingInterval = "month"
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    next_tier: str | None = Field(default=None, description="Key of the plan to suggest next.")
    entitlements: list[PlanEntitlementIn] = Field(default_factory=list)


class PlanRead(BaseModel):
    id: str
    key: str
    version: int
    name: str
    description: str | None
    billing_interval: BillingInterval
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
    starts_at: AwareInstant | None = Field(default=None, description="Default: now.")
    billing_anchor: AwareInstant | None = Field(default=None, description="Default: starts_at.")
    time_zone: TimeZoneName = Field(default="UTC", description="IANA zone of billing and usage periods.")


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



class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, description="Customer key or id.")
    feature: str = Field(min_length=1, description="Feature key or id.")
    quantity: PositiveQuantity = Decimal(1)
    consume: StrictBool = Field(default=False, description="Record the usage if allowed.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


UpsellAction = Literal["none", "upgrade", "top_up", "contact_sales"]


class UpsellHintRead(BaseModel):
    """A pointer to what would avoid the overdraft or denial; details at `href`."""

    action: UpsellAction
    plan: str | None = Field(default=None, description="Key of the suggested plan.")
    top_ups: int | None = Field(default=None, description="Packs of the feature's top-up offer.")
    projected_usage: QuantityOut = Field(description="Usage at period end, projected linearly.")
    href: str = Field(description="Where the full suggestion is: GET it with a read key.")


class CheckRead(BaseModel):
    decision: Literal["allow", "allow_overdraft", "deny"]
    reason: str = Field(description=(
        "within_limit, pay_as_you_go (no limit, past what grants hold), soft_limit (overdraft), "
        "hard_limit, counter_full, has_access, no_access, static or not_entitled."
    ))
    usage: QuantityOut | None = None
    included: QuantityOut | None = None
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    balance: QuantityOut | None = None
    overage: QuantityOut | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    config: dict[str, Any] | None = None
    upsell: UpsellHintRead | None = Field(
        default=None, description="On allow_overdraft or deny of a metered feature: what would cover it."
    )


class DenialRead(BaseModel):
    """A refused check, reservation, commit or seat activation."""

    id: str = Field(description="The denial's id.")
    customer: str = Field(description="The customer's key.")
    customer_id: str = Field(description="The customer's id.")
    feature: str = Field(description="The feature's key.")
    feature_id: str = Field(description="The feature's id.")
    at: datetime = Field(description="When the request was refused.")
    quantity: QuantityOut = Field(description="What the request asked for (1 for a seat activation).")
    reason: str = Field(description="Why, as the check answered: hard_limit, no_access, not_entitled, ...")
    item: str | None = Field(default=None, description="Seats: the item (user, device) refused a seat.")


class SeatHolderRead(BaseModel):
    """An item holding one of the customer's seats now."""

    item: str = Field(description="The item (user, device, licence) as it was activated.")
    activated_at: datetime = Field(
        description="When it took the seat it holds (a later activation of a live seat keeps it)."
    )
    expires_at: datetime | None = Field(
        description="When the lease ends unless a heartbeat renews it; null: it holds the seat until released."
    )
    lease_ttl_seconds: int | None = Field(
        description="The lease length a heartbeat without one renews by; null: none."
    )
    in_overdraft: bool = Field(
        description="Its seat is past the soft limit: the seats taken last are the overdraft ones, so "
        "as many holders are flagged as the entitlement's overage."
    )


class GrantStateRead(BaseModel):
    """One grant in the current period of an entitlement, in burn order."""

    id: str
    amount: QuantityOut = Field(description="What it holds at the start of this period.")
    balance: QuantityOut = Field(description="What it still holds now.")
    priority: int
    effective_at: datetime
    expires_at: datetime | None


class EntitlementStateRead(BaseModel):
    """Where a customer stands on one entitlement now, as a check of nothing would report."""

    feature: str
    kind: Kind
    source: Literal["plan", "override", "adhoc"]
    has_access: bool = Field(description=(
        "One more unit would be allowed now (a check of 1, a new seat): false at the hard limit, "
        "where seats already active stay held and only new activations are refused."))
    in_overdraft: bool = Field(description="Usage is past the soft limit.")
    config: dict[str, Any] | None = None
    usage: QuantityOut | None = None
    reserved: QuantityOut | None = Field(
        default=None, description="metered: units held by open reservations; they count against the "
                                  "balance and the limits as usage does, until committed or released."
    )
    included: QuantityOut | None = None
    rolled_over: QuantityOut | None = Field(
        default=None, description="Unused included units of the previous period carried into this one "
                                  "(with included_rollover); they raise both limits, like a grant."
    )
    soft_limit: QuantityOut | None = None
    hard_limit: QuantityOut | None = None
    balance: QuantityOut | None = None
    overage: QuantityOut | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    grants: list[GrantStateRead] = Field(
        default_factory=list, description="metered: the grants of this period in burn order (an ended one holds 0)."
    )


# --- grants -----------------------------------------------------------------------------------


class RecurrenceIn(BaseModel):
    """The grant starts over with its whole amount at every step (what it held is forfeit)."""

    model_config = ConfigDict(extra="forbid")

    interval: Literal["DAY", "WEEK", "MONTH", "YEAR"]
    anchor: AwareInstant | None = Field(default=None, description="A start-over instant (default: effective_at).")
    time_zone: TimeZoneName = Field(
        default="UTC", validation_alias=AliasChoices("time_zone", "timezone"),
        description="IANA zone the calendar steps are taken in (`timezone` is accepted as well).",
    )


class RecurrenceRead(BaseModel):
    interval: Interval
    anchor: datetime
    time_zone: str
    timezone: str = Field(description="Deprecated: the same as time_zone.", deprecated=True)


class GrantCreate(BaseModel):
    """Extra units on the customer's metered feature: a prepaid top-up, a promotion, a credit."""

    model_config = ConfigDict(extra="forbid")

    amount: PositiveQuantity
    priority: int = Field(
        default=DEFAULT_PRIORITY, ge=0, le=1_000_000,
        description=f"Lower burns first; included units burn at {DEFAULT_PRIORITY}, expiring at the period end.",
    )
    effective_at: AwareInstant | None = Field(default=None, description="Default: now.")
    expires_at: AwareInstant | None = Field(default=None, description="Default: never.")
    min_rollover: LargeQuantity = Field(
        default=Decimal(0), description="At each reset the grant holds at least this much."
    )
    max_rollover: LargeQuantity | None = Field(
        default=None, description="At each reset the grant holds at most this much (default: all it has left)."
    )
    recurrence: RecurrenceIn | None = Field(default=None, description="Default: the grant does not recur.")
    metadata: Metadata = Field(default_factory=dict)


class GrantVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=512)


class GrantRead(BaseModel):
    id: str
    customer: str
    feature: str
    amount: QuantityOut = Field(description="What was granted.")
    balance: QuantityOut = Field(description="What the grant still holds now.")
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    min_rollover: QuantityOut
    max_rollover: QuantityOut | None
    recurrence: RecurrenceRead | None
    metadata: dict[str, Any]
    created_at: datetime


# --- overdraft report -------------------------------------------------------------------------


class OverdraftEpisodeRead(BaseModel):
    started_at: datetime = Field(description="When the seats in use first went above the soft limit.")
    ended_at: datetime | None = Field(description="None: still in overdraft at the end of the window.")
    peak: int = Field(description="Most seats active during the episode.")
    peak_overdraft: QuantityOut = Field(description="Most seats above the soft limit during it.")


class PeriodOverageRead(BaseModel):
    period_start: datetime = Field(description="Start of the usage period.")
    period_end: datetime | None = Field(description="End of the usage period; null for a period without an end.")
    usage: QuantityOut = Field(description="The period's usage when its overage was largest.")
    soft_limit: QuantityOut = Field(description="In force then: raised by the grants live then.")
    overage: QuantityOut = Field(description="The largest overage in the period (usage above the soft limit).")


class OverdraftRead(BaseModel):
    """How far and how long one customer ran above what it paid for on one feature."""

    customer: str = Field(description="The customer's key.")
    feature: str = Field(description="The feature's key.")
    kind: Kind = Field(description="metered or seats: which of the fields below apply.")
    included: QuantityOut = Field(description="Included in the customer's latest terms.")
    soft_limit: QuantityOut = Field(description="Soft limit of the latest terms, before grants.")
    hard_limit: QuantityOut | None = Field(description="Hard limit of the latest terms; null when uncapped.")
    peak_overdraft: QuantityOut = Field(description="seats: most seats above the soft limit; metered: largest overage.")
    denials: int = Field(description="Refused checks and activations in the window.")
    peak: int | None = Field(default=None, description="seats: most seats active at once.")
    overdraft_seconds: QuantityOut | None = Field(default=None, description="seats: time above the soft limit.")
    overdraft_seat_hours: QuantityOut | None = Field(
        default=None, description="seats: seats above the soft limit times hours."
    )
    episodes: list[OverdraftEpisodeRead] = Field(default_factory=list, description="seats: each stretch of overdraft.")
    periods: list[PeriodOverageRead] = Field(
        default_factory=list, description="metered: the usage periods whose usage passed the soft limit."
    )


# --- upsell -----------------------------------------------------------------------------------

MoneyOut = Annotated[Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str)]


class UpsellTopUpRead(BaseModel):
    """Prepaid packs of the feature that keep the projection within the soft limit."""

    count: int = Field(description="How many packs.")
    units: QuantityOut = Field(description="count x amount.")
    amount: QuantityOut = Field(description="Units per pack.")
    price: MoneyOut | None = Field(default=None, description="Per pack, when the offer has one.")
    total_price: MoneyOut | None = Field(default=None, description="count x price, when the offer has a price.")
    currency: str | None = Field(default=None, description="Currency of the prices, when the offer names one.")
    expires_after_days: int | None = Field(
        default=None, description="Days a pack lasts once bought; null when packs do not expire."
    )


class UpsellPlanRead(BaseModel):
    """A plan on the upgrade path (latest published version) and what it gives the feature."""

    key: str = Field(description="The plan's key.")
    name: str = Field(description="The plan's name.")
    version: int = Field(description="Its latest published version, the one a customer would move to.")
    covers: Literal["soft", "hard"] = Field(
        description="soft: the projection fits its soft limit; hard: it is only not denied (overdraft)."
    )
    unlimited: bool = Field(description="The plan grants the feature without a limit.")
    included: QuantityOut | None = Field(default=None, description="Included by the plan; null when unlimited.")
    soft_limit: QuantityOut | None = Field(default=None, description="The plan's soft limit; null when unlimited.")
    hard_limit: QuantityOut | None = Field(
        default=None, description="The plan's hard limit; null when unlimited or uncapped."
    )


class UpsellSuggestionRead(BaseModel):
    action: UpsellAction = Field(description="What to offer; `none` when the projection fits.")
    plan: UpsellPlanRead | None = Field(default=None, description="The plan to move to, when one is on the path.")
    top_up: UpsellTopUpRead | None = Field(default=None, description="The recommendation or the alternative.")


class ProjectionRead(BaseModel):
    usage_at_period_end: QuantityOut = Field(description="Usage plus reserved units, projected.")
    rate_per_day: QuantityOut = Field(description="The rate the projection uses, in units per day.")
    basis: str = Field(
        description="The rate used: period (linear), 24h, 7d, early (too little of the period has passed to "
        "extrapolate: the usage so far), none, or seats (a gauge)."
    )


class UpsellRead(BaseModel):
    """Where a customer stands on one counted feature, where it is heading, and what covers it."""

    customer: str = Field(description="The customer's key.")
    customer_id: str = Field(description="The customer's id.")
    feature: str = Field(description="The feature's key.")
    entitlement_id: str = Field(description="The customer's entitlement to the feature.")
    kind: Literal["metered", "seats"] = Field(description="metered: usage in a period; seats: seats active now.")
    current_plan: str | None = Field(description="Key of the plan the entitlement comes from; null when granted alone.")
    status: Literal["within_limit", "near_limit", "overdraft", "denied"] = Field(
        description="The most severe: denied this period, past the soft limit, at 80 % of it, or within."
    )
    in_overdraft: bool = Field(description="Usage plus reserved units are past the soft limit now.")
    usage: QuantityOut = Field(description="Used this period (seats: active now), reserved units excluded.")
    reserved: QuantityOut = Field(description="Held by open reservations; counted as spent.")
    included: QuantityOut = Field(description="Included, raised by live grants.")
    soft_limit: QuantityOut = Field(description="Soft limit, raised by live grants.")
    hard_limit: QuantityOut | None = Field(description="Hard limit, raised by live grants; null when uncapped.")
    overage: QuantityOut = Field(description="How far past the soft limit (usage + reserved - soft).")
    period_start: datetime | None = Field(description="Start of the current usage period; null without one.")
    period_end: datetime | None = Field(description="End of the current usage period; null without one.")
    denials: int = Field(description="Denied checks this period.")
    last_denied_at: datetime | None = Field(description="When the last of those was denied; null when none was.")
    projection: ProjectionRead = Field(description="Where usage is heading by the period end.")
    suggestion: UpsellSuggestionRead = Field(description="What would cover the projection.")

