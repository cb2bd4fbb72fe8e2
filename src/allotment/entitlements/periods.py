"""Usage periods: when a metered entitlement's usage resets, in the subscription's time zone.

A period boundary is the anchor's local wall-clock time stepped by whole calendar units
(day, week, month, year) in the subscription's zone. Each boundary is computed from the anchor
directly, never from the previous boundary, so a monthly anchor on the 31st clamps to the last
day of shorter months and comes back to the 31st afterwards.

A wall-clock time maps to the *first instant at which the local clock reaches it*: the first
occurrence when clocks fall back, the end of the gap when they spring forward. That mapping is
monotone, so boundaries strictly increase and periods are contiguous, non-empty and never
overlap. The anchor itself is always a boundary, even when its wall time occurs twice.
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from allotment.types import EPOCH, as_utc

_SECOND = timedelta(seconds=1)


class Interval(enum.StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    NONE = "NONE"  # never resets


@dataclass(frozen=True)
class UsagePeriod:
    """How often usage resets; `anchor` is any aware instant (stored in UTC)."""

    interval: Interval
    anchor: datetime
    tz: ZoneInfo

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor", as_utc(self.anchor))


def period_at(period: UsagePeriod, at: datetime) -> tuple[datetime, datetime | None]:
    """The period [start, end) containing `at`, in UTC; end is None when it never resets.

    Periods extend before the anchor too (the anchor aligns them, it does not start them),
    except for NONE, whose one period begins at the anchor whatever `at` is.
    """
    at = as_utc(at)
    if period.interval is Interval.NONE:
        return period.anchor, None
    n = index_at(period, at)
    return boundary(period, n), boundary(period, n + 1)


def index_at(period: UsagePeriod, at: datetime) -> int:
    """The index n of the period containing `at`: boundary(n) <= at < boundary(n + 1)."""
    at = as_utc(at)
    n = _estimate(period, at)
    while boundary(period, n) > at:
        n -= 1
    while boundary(period, n + 1) <= at:
        n += 1
    return n


# Pure and asked again and again for the same few periods (every check replays or bounds the
# periods of the rows it reads): remembered, as the zone arithmetic is most of its cost.
@lru_cache(maxsize=65536)
def boundary(period: UsagePeriod, n: int) -> datetime:
    """The n-th period start (n = 0 is the anchor; negative n lie before it), in UTC."""
    if n == 0 or period.interval is Interval.NONE:
        return period.anchor
    return first_instant_at(_wall_boundary(period, n), period.tz)


def first_instant_at(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the local clock in `tz` reads `wall` or later."""
    earlier = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _local(earlier, tz) == wall:
        return earlier  # exists; fold=0 is the first occurrence of a repeated time
    # In a gap, which clocks only ever jump forward: the transition lies after the instant
    # read with the new offset (fold=1) and no later than the one read with the old offset.
    # Zone transitions fall on whole seconds, so bisect over POSIX seconds.
    low = (wall.replace(tzinfo=tz, fold=1).astimezone(UTC) - EPOCH) // _SECOND
    high = -((EPOCH - earlier) // _SECOND)  # ceiling
    while high - low > 1:
        mid = (low + high) // 2
        if _local(EPOCH + mid * _SECOND, tz) >= wall:
            high = mid
        else:
            low = mid
    return EPOCH + high * _SECOND


def _wall_boundary(period: UsagePeriod, n: int) -> datetime:
    """The n-th boundary as a naive local wall-clock time (calendar arithmetic, clamped days)."""
    wall = _local(period.anchor, period.tz)
    match period.interval:
        case Interval.DAY:
            return wall + timedelta(days=n)
        case Interval.WEEK:
            return wall + timedelta(weeks=n)
        case Interval.MONTH:
            return _shift_months(wall, n)
        case _:
            return _shift_months(wall, 12 * n)


def _shift_months(wall: datetime, months: int) -> datetime:
    year, month0 = divmod(wall.year * 12 + wall.month - 1 + months, 12)
    day = min(wall.day, calendar.monthrange(year, month0 + 1)[1])
    return wall.replace(year=year, month=month0 + 1, day=day)


def _estimate(period: UsagePeriod, at: datetime) -> int:
    """A period index within one or two of the right one, from local calendar fields."""
    wall, anchor = _local(at, period.tz), _local(period.anchor, period.tz)
    days = (wall.date() - anchor.date()).days
    match period.interval:
        case Interval.DAY:
            return days
        case Interval.WEEK:
            return days // 7
        case Interval.MONTH:
            return (wall.year - anchor.year) * 12 + wall.month - anchor.month
        case _:
            return wall.year - anchor.year


def _local(at: datetime, tz: ZoneInfo) -> datetime:
    """Naive local wall-clock time of an aware instant."""
    return at.astimezone(tz).replace(tzinfo=None)
