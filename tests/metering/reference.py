"""Naive references the metering code is checked against: slow, obvious, and independent of it.

Window boundaries come from scanning instants and asking the time zone what its wall clock
shows, not from calendar arithmetic; aggregates come from plain lists of Decimals.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

MINUTE_US = 60_000_000
QUARTER_US = 15 * MINUTE_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def wall(at_us: int, tz: ZoneInfo) -> datetime:
    """What a clock in `tz` shows at `at_us` (naive local time)."""
    return (EPOCH + timedelta(microseconds=at_us)).astimezone(tz).replace(tzinfo=None)


def _label(local: datetime, size: str) -> tuple[int, ...]:
    fields = (local.year, local.month, local.day, local.hour, local.minute)
    return fields[: {"MINUTE": 5, "HOUR": 4, "DAY": 3, "MONTH": 2}[size]]


def _on_whole_unit(local: datetime, size: str) -> bool:
    if size == "MINUTE":
        return local.second == local.microsecond == 0
    return local.minute == local.second == local.microsecond == 0


def is_boundary(at_us: int, size: str, tz: ZoneInfo) -> bool:
    """A window starts here: a civil day or month begins (its first existing instant), or the
    wall clock starts a minute or hour (shows :00, also the second time round, or jumps into one)."""
    now, before = wall(at_us, tz), wall(at_us - 1, tz)
    if _label(now, size) != _label(before, size):
        return True
    return size in ("MINUTE", "HOUR") and _on_whole_unit(now, size)


def naive_windows(start_us: int, end_us: int, size: str | None, tz: ZoneInfo) -> list[tuple[int, int]]:
    """Windows by scanning every whole minute (MINUTE) or quarter hour (otherwise) in the range.

    Every offset and transition of the zones under test falls on a quarter hour of UTC, so every
    boundary is on the scanned grid.
    """
    if end_us <= start_us:
        return []
    if size is None:
        return [(start_us, end_us)]
    step = MINUTE_US if size == "MINUTE" else QUARTER_US
    first = start_us // step * step + step
    cuts = [t for t in range(first, end_us, step) if is_boundary(t, size, tz)]
    edges = [start_us, *cuts, end_us]
    return list(itertools.pairwise(edges))


def naive_aligned_windows(start_us: int, end_us: int, size: str | None, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The whole windows overlapping the range, as rows are labelled: scanned back from `start`
    to the boundary at or before it, and on from `end` to the boundary at or after it."""
    if end_us <= start_us:
        return []
    if size is None:
        return [(start_us, end_us)]
    step = MINUTE_US if size == "MINUTE" else QUARTER_US
    first = start_us // step * step
    while not is_boundary(first, size, tz):
        first -= step
    last = -(-end_us // step) * step
    while not is_boundary(last, size, tz):
        last += step
    cuts = [t for t in range(first, last + step, step) if is_boundary(t, size, tz)]
    return list(itertools.pairwise(cuts))


@dataclass(frozen=True)
class Sent:
    """An event as the reference sees it: arrival order is its position in the sent list."""

    id: str
    subject: str
    group: str | None
    time_us: int
    value: Decimal | str | int | None


def first_arrivals(sent: list[Sent]) -> list[Sent]:
    """What the log keeps: the first arrival of each id (a re-sent id is a duplicate)."""
    seen: set[str] = set()
    kept = []
    for event in sent:
        if event.id not in seen:
            seen.add(event.id)
            kept.append(event)
    return kept


def aggregate(aggregation: str, events: list[Sent]) -> Decimal | None:
    """The meter's value over `events` (in arrival order), from first principles."""
    if aggregation == "COUNT":
        return Decimal(len(events))
    if aggregation == "UNIQUE_COUNT":
        return Decimal(len({(type(e.value), e.value) for e in events}))
    values = [Decimal(e.value) for e in events]  # type: ignore[arg-type]
    if aggregation == "SUM":
        return sum(values, Decimal(0))
    if not values:
        return None
    if aggregation == "MIN":
        return min(values)
    if aggregation == "MAX":
        return max(values)
    if aggregation == "AVG":
        return sum(values, Decimal(0)) / len(values)
    assert aggregation == "LATEST"
    # At the latest time: the last to arrive of each subject and group, then the greatest of those.
    latest_time = max(e.time_us for e in events)
    last_of: dict[tuple[str, str | None], Decimal] = {}
    for e, v in zip(events, values, strict=True):
        if e.time_us == latest_time:
            last_of[(e.subject, e.group)] = v
    return max(last_of.values())
