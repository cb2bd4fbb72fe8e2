"""Tables of the outbox: endpoints, notifications, one delivery per (notification, endpoint),
and the log of every attempt.

`notifications.seq` is the order of emission; a delivery copies it so that the claim query
can hold back a message while an earlier one to the same endpoint and customer is pending.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base, UTCDateTime

# On SQLite an INTEGER PRIMARY KEY is the rowid: appends stay in key order and cost least.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
# `next_attempt_at` of a delivery held for a disabled endpoint: never due, so no worker polls
# for it, until enabling the endpoint makes it due again.
HELD = datetime(9999, 1, 1, tzinfo=UTC)
_PENDING_ONLY = text("status = 'pending'")
_NOT_FANNED_OUT = text("fanned_out_at IS NULL")


class WebhookEndpoint(Base):
    """Where a tenant wants notifications sent. Deleting keeps the row for the delivery log."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    secret: Mapped[str] = mapped_column(String(128))
    # The secret a rotation replaced: it signs too, beside `secret`, until `previous_secret_until`.
    previous_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set: receives only what rules naming it send (and pings), never by `event_types`.
    rules_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Sent with every attempt; the signature and content headers always win over them.
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    # How bodies are written: "native", or "openmeter" for channels made through its API.
    body_format: Mapped[str] = mapped_column(String(16), default="native", server_default="native")
    disabled_reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Start of the current run of failed attempts; cleared by any success.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Notification(Base):
    """One emitted message. `dedupe_key` is unique per tenant: emitting twice stores once."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("tenant_id", "dedupe_key"),
        Index(None, "tenant_id", "seq"),
        Index(None, "tenant_id", "customer_id", "seq"),
        Index(None, "tenant_id", "type", "seq"),
        Index("ix_notifications_fan_out", "seq", sqlite_where=_NOT_FANNED_OUT,
              postgresql_where=_NOT_FANNED_OUT),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    type: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(256))
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    # Set for messages meant for one endpoint only (pings); otherwise every subscriber gets it.
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id"), nullable=True
    )
    # Set for messages meant for one rule's endpoints only (a rule's test); no foreign key:
    # rules are deleted outright, the message stays in the log.
    rule_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The JSON text of the payload, kept as emitted so every redelivery sends the same bytes.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Delivery(Base):
    """One notification on its way to one endpoint: pending, delivered or dead (lettered)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_seq", "endpoint_id"),
        Index(None, "tenant_id", "endpoint_id", "notification_seq"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", sqlite_where=_PENDING_ONLY,
              postgresql_where=_PENDING_ONLY),
        Index("ix_webhook_deliveries_queue", "endpoint_id", "ordering_key", "notification_seq",
              sqlite_where=_PENDING_ONLY, postgresql_where=_PENDING_ONLY),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    notification_seq: Mapped[int] = mapped_column(ForeignKey("notifications.seq"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    # The customer's id, or the notification's own id when it has no customer (no ordering).
    ordering_key: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A claim: the worker holding `lease` may send until `locked_until`; nobody else may.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Start of the retry horizon (first attempt, or first attempt after a replay).
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Attempt(Base):
    """The delivery log: what happened on each try."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "delivery_id", "attempt"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)


class NotificationRule(Base):
    """When a tenant wants to be told: threshold levels per feature, or a grant's lead time.

    `features` holds feature keys (empty: every feature); thresholds are `{type, value}`.
    `endpoint_ids` names endpoints that receive what the rule matches, in addition to the
    endpoints subscribed to its type (empty: only those).
    """

    __tablename__ = "notification_rules"
    __table_args__ = (Index(None, "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    thresholds: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    lead_time_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    endpoint_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
