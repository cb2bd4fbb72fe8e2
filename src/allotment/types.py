"""Small shared value helpers: opaque ids and UTC time."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator
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
# Every time the product takes in lies here, so that windows, periods and expiries computed
# from it (in any time zone) stay within what a datetime can hold.
EARLIEST = EPOCH
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "must be from 1970-01-01T00:00:00Z and before 9000-01-01T00:00:00Z"


def within_range(at: datetime) -> bool:
    """Whether `at` lies in [EARLIEST, LATEST); naive means UTC. Compared, not converted:
    converting 9999-12-31T23:59:59-14:00 to UTC would overflow."""
    return EARLIEST <= (at.replace(tzinfo=UTC) if at.tzinfo is None else at) < LATEST


def in_range(at: datetime) -> datetime:
    """`at` unchanged when it is within range; a ValueError saying the range when not."""
    if not within_range(at):
        raise ValueError(OUT_OF_RANGE)
    return at


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
NOT_A_DATE_TIME = "must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z"


def date_time_text(value: object) -> object:
    """Times come in as RFC 3339 text, as documented. Pydantic would also read a number (or
    a numeric string) as seconds since the epoch, so a stray `0.5` would mean 1970."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(NOT_A_DATE_TIME)
    return value


Instant = Annotated[datetime, BeforeValidator(date_time_text), AfterValidator(in_range)]
AwareInstant = Annotated[AwareDatetime, BeforeValidator(date_time_text), AfterValidator(in_range)]
