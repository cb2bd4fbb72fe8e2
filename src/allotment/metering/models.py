"""Tables of the metering domain. See docs/storage.md for why they look like this."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base, UTCDateTime, unique_key_while_live

# On SQLite an INTEGER PRIMARY KEY is the rowid: appends stay in key order and cost least.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Meter(Base):
    __tablename__ = "meters"
    __table_args__ = (
        unique_key_while_live("meters", retired_column="deleted_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    event_type: Mapped[str] = mapped_column(String(256))
    aggregation: Mapped[str] = mapped_column(String(16))
    value_property: Mapped[str | None] = mapped_column(String(256), nullable=True)
    group_by: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    filters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    event_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The vendor's own key-values (OpenMeter's meter metadata), answered as sent; None: none.
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# The minute of an event's time as the index on events holds it; a statement that should use
# that index names its minutes with exactly this text, between bounds from `event_minute`.
EVENT_MINUTE = "time_us / 60000000"


def event_minute(time_us: int) -> int:
    """`EVENT_MINUTE` of a time. Times are never before 1970 (the API refuses them), so both
    databases' integer division (toward zero) is Python's floor division here."""
    return time_us // 60_000_000


class Event(Base):
    """The append-only event log. Identity is (tenant, source, event_id), forever."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "event_id", name="uq_events_identity"),
        # By minute, not exact time: entries of one minute go in arrival order, so live
        # traffic appends where the exact times landed all over (docs/storage.md).
        Index("ix_events_tenant_type_minute", "tenant_id", "type", text(f"({EVENT_MINUTE})")),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(256))
    event_id: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(256))
    subject: Mapped[str] = mapped_column(String(256))
    time_us: Mapped[int] = mapped_column(BigInteger)
    received_us: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[str | None] = mapped_column(Text, nullable=True)


class EventRepeat(Base):
    """Later arrivals of a stored event's identity: how many, and when the last one came.

    Beside the log rather than in it, so that the log stays append-only; only events that
    were sent again have a row."""

    __tablename__ = "event_repeats"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "source", "event_id"),)

    tenant_id: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(256))
    event_id: Mapped[str] = mapped_column(String(256))
    count: Mapped[int] = mapped_column(BigInteger)
    last_us: Mapped[int] = mapped_column(BigInteger)


class RejectedEvent(Base):
    """What an ingest call refused, kept so operators can see it (the caller was told too)."""

    __tablename__ = "rejected_events"
    __table_args__ = (Index(None, "tenant_id", "received_us"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    received_us: Mapped[int] = mapped_column(BigInteger)
    batch_index: Mapped[int] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str] = mapped_column(String(1024))
    raw: Mapped[str] = mapped_column(Text)


class RollupJournal(Base):
    """Minute cells of acknowledged batches not yet folded into `rollups` (see docs/storage.md).

    Ingest appends one row per batch in its own transaction; the folder merges many rows into
    minute/hour/day rollups and deletes them in one transaction; queries read both, so answers
    are exact whatever the folder's lag.
    """

    __tablename__ = "rollup_journal"
    __table_args__ = (Index(None, "tenant_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class Rollup(Base):
    """Aggregates of one meter per subject, group and bucket, at three widths (s).

    Quantities are integers in millionths (exact to 6 decimal places) so that both backends
    add them exactly.
    """

    __tablename__ = "rollups"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "meter_id", "width", "subject", "group_key", "bucket"),
        Index("ix_rollups_meter_width_bucket", "tenant_id", "meter_id", "width", "bucket"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40))
    meter_id: Mapped[str] = mapped_column(String(40))
    width: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(256))
    group_key: Mapped[str] = mapped_column(String(1024))
    bucket: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    lo: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hi: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_value: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RollupDistinct(Base):
    """The distinct values seen per bucket, so UNIQUE_COUNT over any window is exact."""

    __tablename__ = "rollup_distinct"
    __table_args__ = (
        PrimaryKeyConstraint(
            "tenant_id", "meter_id", "width", "subject", "group_key", "bucket", "value"
        ),
        Index("ix_rollup_distinct_meter_width_bucket", "tenant_id", "meter_id", "width", "bucket"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40))
    meter_id: Mapped[str] = mapped_column(String(40))
    width: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(256))
    group_key: Mapped[str] = mapped_column(String(1024))
    bucket: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[str] = mapped_column(String(512))
