"""Tables of the entitlement catalogue and of what each customer is provisioned with."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from allotment.db import Base, UTCDateTime, unique_key_while_live


class Quantity(TypeDecorator[Decimal]):
    """Exact decimals on both backends: NUMERIC(38, 6) on PostgreSQL, text on SQLite.

    SQLite's NUMERIC affinity would keep only 15 significant digits (a double); text keeps
    every digit. Nothing compares these columns in SQL, so text ordering never matters.
    """

    impl = Numeric(38, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return _plain(Decimal(value))


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros and without exponent: 100.000000 -> 100, 0.500000 -> 0.5."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


class Feature(Base):
    __tablename__ = "features"
    __table_args__ = (
        unique_key_while_live("features", retired_column="archived_at"),
        # An archived feature is still found by its key while no live one takes it (resolve.py).
        Index("ix_features_tenant_key_archived", "tenant_id", "key", "archived_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    unit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meter_id: Mapped[str | None] = mapped_column(ForeignKey("meters.id"), nullable=True)
    meter_group_filter: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Plan(Base):
    """One version of a plan. Published versions never change; a change is a new version."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("tenant_id", "key", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    billing_interval: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    next_tier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The plan as another billing system (Lago) defined it, for what we do not model yet
    # (prices, trials, charge models): answered back to that system as it sent it.
    external_document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class _Values:
    """The value columns an entitlement carries, shared by plan and customer rows.

    Which ones are set depends on the kind: boolean uses has_access, static config, metered
    usage_period/included/limits/overage_at_reset/included_rollover, seats
    included/limits/lease_ttl_seconds.
    """

    kind: Mapped[str] = mapped_column(String(16))
    has_access: Mapped[bool] = mapped_column(Boolean, default=True)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    usage_period: Mapped[str | None] = mapped_column(String(8), nullable=True)
    included: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    soft_limit: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    hard_limit: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    overage_at_reset: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # Unused included units carried into the next usage period, at most this many (None: none).
    included_rollover: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    lease_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)


VALUE_COLUMNS = (
    "kind", "has_access", "config", "usage_period", "included", "soft_limit", "hard_limit",
    "overage_at_reset", "included_rollover", "lease_ttl_seconds",
)


class PlanEntitlement(_Values, Base):
    __tablename__ = "plan_entitlements"
    __table_args__ = (UniqueConstraint("plan_id", "feature_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))


class Subscription(Base):
    """A customer on one plan version over [starts_at, ends_at)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index(None, "tenant_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    status: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    billing_anchor: Mapped[datetime] = mapped_column(UTCDateTime())
    time_zone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerEntitlement(_Values, Base):
    """What a customer is entitled to for one feature over [active_from, active_to).

    At most one row per customer and feature is open-ended (active_to IS NULL); rows that
    a scheduled change starts later follow the rows they replace without overlapping them.
    """

    __tablename__ = "customer_entitlements"
    __table_args__ = (
        Index(
            "uq_customer_entitlements_open",
            "tenant_id",
            "customer_id",
            "feature_id",
            unique=True,
            sqlite_where=text("active_to IS NULL"),
            postgresql_where=text("active_to IS NULL"),
        ),
        # The row in force for a pair, ended ones included (resolve.py, a check's names).
        Index("ix_customer_entitlements_pair_from", "customer_id", "feature_id", "active_from"),
        # Rows starting or ending at a scheduled instant are found by time (scheduled.py).
        Index(None, "active_from"),
        Index(None, "active_to"),
        # An entitlement reset by hand is read by its first row's id (listing.entitlement).
        Index(None, "origin_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))
    source: Mapped[str] = mapped_column(String(16))
    subscription_id: Mapped[str | None] = mapped_column(
        ForeignKey("subscriptions.id"), nullable=True
    )
    usage_anchor: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    active_from: Mapped[datetime] = mapped_column(UTCDateTime())
    active_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set on a row that a usage reset started (usage_resets.py): what that reset did with the
    # overage of the period it ended (`carry` or `forgive`); None for any other row.
    reset_overage: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # The id the entitlement was created under, on the rows usage resets continued it with:
    # to the vendor it is still the same entitlement (None: the row's own id is that id).
    origin_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The vendor's own key-values (OpenMeter's entitlement metadata), answered as sent; None:
    # none. A usage reset carries them to the row that continues the entitlement.
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON(none_as_null=True), nullable=True)

    @property
    def public_id(self) -> str:
        """The entitlement's id as the vendor knows it, the same across usage resets."""
        return self.origin_id or self.id


class AuditEntry(Base):
    """Who changed what and when, with the entity before and after (None when created/removed)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "tenant_id", "entity_type", "entity_id"),
        Index(None, "tenant_id", "at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(40))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class EntitlementUsage(Base):
    """The live counter of one entitlement in one usage period (see docs/entitlement-counters.md).

    Quantities are integer millionths so that the database can compare and add them exactly in
    the one conditional statement that consumes.
    """

    __tablename__ = "entitlement_usage"
    __table_args__ = (Index(None, "reset_told", "period_end"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    entitlement_id: Mapped[str] = mapped_column(
        ForeignKey("customer_entitlements.id"), primary_key=True
    )
    period_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch microseconds
    used: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Overage carried in from the previous period (already part of `used`); NULL until the
    # period's carry is fixed, which happens once (docs/grants.md, "Overage at reset").
    carried: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When the period ends (epoch µs; NEVER for a period that never ends), filled in by the
    # worker's scan, and whether the reset at that end was told (entitlements/resets.py).
    period_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reset_told: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UpsellDue(Base):
    """An upsell suggestion a crossing asked for, waiting for the worker (upsell_queue.py).

    One row per entitlement and period: later crossings before the worker comes update the
    usage and time the projection starts from. `usage` is in millionths.
    """

    __tablename__ = "upsell_due"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # No foreign key: a row that never took effect is deleted, and the worker skips its asks.
    entitlement_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch microseconds
    period_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    usage: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[int] = mapped_column(BigInteger)  # epoch microseconds of the crossing


class UsageDenial(Base):
    """One refused check: who asked for how much of what, when, and why it was refused."""

    __tablename__ = "usage_denials"
    __table_args__ = (Index(None, "tenant_id", "at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    quantity: Mapped[Decimal] = mapped_column(Quantity())
    reason: Mapped[str] = mapped_column(String(32))
    item: Mapped[str | None] = mapped_column(String(255), nullable=True)  # seats: who was refused a seat


class Consumption(Base):
    """The first answer to a check sent with an idempotency key, replayed on retries."""

    __tablename__ = "consumptions"
    __table_args__ = (Index("ix_consumptions_created_at", "created_at"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the check's fields
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SeatLease(Base):
    """The latest lease of one item on a seats entitlement.

    Live while released_at is NULL and expires_at is NULL or later than now. Activating the
    item again after its lease ended reuses the row; the gauge in `entitlement_usage`
    (period_start 0) counts the live leases.
    """

    __tablename__ = "seat_leases"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    entitlement_id: Mapped[str] = mapped_column(
        ForeignKey("customer_entitlements.id"), primary_key=True
    )
    item: Mapped[str] = mapped_column(String(255), primary_key=True)
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The lease length last asked for, which a heartbeat without one renews by (NULL: none).
    lease_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SeatSpan(Base):
    """A lease an item held before its latest one: written when the item is activated again
    after its lease ended (the lease row is then reused). With `seat_leases`, the whole
    history of the gauge, which the overdraft report sweeps."""

    __tablename__ = "seat_spans"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    entitlement_id: Mapped[str] = mapped_column(ForeignKey("customer_entitlements.id"), primary_key=True)
    item: Mapped[str] = mapped_column(String(255), primary_key=True)
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Reservation(Base):
    """Units of a metered entitlement held in its live counter (`reserved`) until commit.

    `period_start` is the counter row the hold sits in (epoch microseconds). Status moves from
    open to committed, released or expired exactly once; `closed_at` is when (for an expired
    one: its `expires_at`). A retry with the same idempotency key finds the row by
    `(tenant_id, idempotency_key)` and compares `fingerprint`.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index(None, "tenant_id", "entitlement_id", "status", "expires_at"),
        Index(None, "status", "expires_at"),  # the worker's scan for holds expired untouched
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    entitlement_id: Mapped[str] = mapped_column(ForeignKey("customer_entitlements.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))
    period_start: Mapped[int] = mapped_column(BigInteger)  # epoch microseconds
    quantity: Mapped[Decimal] = mapped_column(Quantity())
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    committed_quantity: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class GrantRecord(Base):
    """Extra units on a customer's metered feature: a prepaid top-up, a promotion, a credit.

    Attached to the customer and feature, not to one entitlement row, so a grant bought on
    one plan survives a plan change. `amount` is what was granted; what a grant holds in a
    later period follows from usage and its rollover bounds (engine.burn / engine.rollover).
    """

    __tablename__ = "grants"
    __table_args__ = (Index(None, "tenant_id", "customer_id", "feature_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))
    amount: Mapped[Decimal] = mapped_column(Quantity())
    priority: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # How the client put the expiry, when it gave it as a span from `effective_at`
    # (`{"duration": "DAY", "count": 7}`, OpenMeter's `expiration`): answered back as given,
    # since the expiry alone cannot tell 7 DAY from 1 WEEK. NULL: the expiry was given as is.
    expiration: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    void_reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    min_rollover: Mapped[Decimal] = mapped_column(Quantity())
    max_rollover: Mapped[Decimal | None] = mapped_column(Quantity(), nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # OpenMeter's grant annotations (key-values of any JSON), answered as sent; None: none.
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The `used` of the counter of the period it ended in, at the instant it ended (expiry or
    # void), in millionths: recorded by the first write to that counter after the end
    # (grant_ends.record). NULL while nothing was written since: the counter still holds it.
    usage_at_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Likewise at the instant it became effective, when that fell inside a usage period: the
    # usage before it is not the grant's to pay (engine.burn).
    usage_at_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A recurring grant starts over with its whole amount at every calendar step of
    # `recurrence_interval` from `recurrence_anchor`, stepped in `recurrence_timezone`.
    recurrence_interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    recurrence_anchor: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recurrence_timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)


class GrantRecurrence(Base):
    """The `used` of the counter at a recurring grant's start-over inside a usage period, in
    millionths: what the instance that ended there had paid for follows from it.

    Written by the first write to that counter after the instant (grant_ends.record); no
    row while nothing was written since: the counter still holds it.
    """

    __tablename__ = "grant_recurrences"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), primary_key=True)
    at_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch microseconds
    used: Mapped[int] = mapped_column(BigInteger)


class ExternalSubscription(Base):
    """Another billing system's subscription id (Lago's `external_id`), kept beside ours.

    Its id is also a subject key of the customer, so that the events that system sends for
    the subscription are the customer's usage; `subscription_id` is the native subscription
    it started, if any.
    """

    __tablename__ = "external_subscriptions"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"), nullable=True)
    plan_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
