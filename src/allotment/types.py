"""Small shared value helpers: opaque ids and UTC time."""

from __future__ import annotations

from datetime import UTC, datetime

from ulid import ULID


def new_id(prefix: str) -> str:
    """A stable, opaque, time-sortable id such as `cus_01JD...`."""
    return f"{prefix}_{str(ULID()).lower()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_micros(at: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (how event times are stored)."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def as_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: a time zone offset is required")
    return at.astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
