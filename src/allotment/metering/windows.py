"""Pure time planning for queries: windows in a time zone, and how to cover them with buckets.

Rollups are kept at three bucket widths (minute, hour, UTC day). A window [start, end) is
covered greedily by the widest whole buckets that fit, then narrower ones at the edges, and
the sub-minute remainder (if `from`/`to` carry seconds) is read from the raw event log, so every
answer is exact whatever the window time zone (DST and 30/45-minute offsets included).

A query's rows are labelled with whole windows (`aligned`), as OpenMeter labels them, while only
the part of each window inside the query's [from, to) is counted (`windows`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from allotment.types import from_micros, to_micros

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
BUCKET_WIDTHS_US = (DAY_US, HOUR_US, MINUTE_US)
RAW = 0  # a segment read from the event log itself


class WindowSize(enum.StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


_WALL_UNITS_US = {WindowSize.MINUTE: MINUTE_US, WindowSize.HOUR: HOUR_US}


@dataclass(frozen=True)
class Segment:
    width_us: int  # RAW, or one of BUCKET_WIDTHS_US
    start_us: int
    end_us: int


class TooManyWindows(ValueError):
    def __init__(self, at_least: int) -> None:
        super().__init__(f"the range has at least {at_least} windows")
        self.at_least = at_least


_SHORTEST_US = {"MINUTE": MINUTE_US, "HOUR": HOUR_US, "DAY": 23 * HOUR_US, "MONTH": 28 * DAY_US}


def windows(
    start_us: int, end_us: int, size: WindowSize | None, tz: ZoneInfo, *, limit: int | None = None
) -> list[tuple[int, int]]:
    """Windows aligned to `size` in `tz`, clipped to [start, end): the part of each that is counted."""
    return clip(aligned(start_us, end_us, size, tz, limit=limit), start_us, end_us)


def clip(spans: list[tuple[int, int]], start_us: int, end_us: int) -> list[tuple[int, int]]:
    return [(max(lo, start_us), min(hi, end_us)) for lo, hi in spans]


def aligned(
    start_us: int, end_us: int, size: WindowSize | None, tz: ZoneInfo, *, limit: int | None = None
) -> list[tuple[int, int]]:
    """The whole windows of `size` in `tz` that overlap [start, end); [start, end) itself when
    size is None. Rows are labelled with these (as OpenMeter does) whatever `from` and `to` are.

    Raises TooManyWindows before doing the work when more than `limit` could result.
    """
    if end_us <= start_us:
        return []
    if size is None:
        return [(start_us, end_us)]
    if limit is not None and (end_us - start_us) // _SHORTEST_US[size.value] > limit + 1:
        raise TooManyWindows((end_us - start_us) // (_SHORTEST_US[size.value] * 2) + 1)
    unit_us = _WALL_UNITS_US.get(size)
    out = []
    cursor = to_micros(_floor_local(from_micros(start_us), size, tz))
    offset = _offset_us(cursor, tz)
    while cursor < end_us:
        if unit_us:
            nxt, offset = _next_wall(cursor, offset, unit_us, tz)
        else:
            nxt = to_micros(_next_civil(from_micros(cursor), size, tz))
        if nxt > start_us:
            out.append((cursor, nxt))
        cursor = nxt
    return out


def _floor_local(at: datetime, size: WindowSize, tz: ZoneInfo) -> datetime:
    local = at.astimezone(tz)
    if size is WindowSize.MINUTE:
        local = local.replace(second=0, microsecond=0)
    elif size is WindowSize.HOUR:
        local = local.replace(minute=0, second=0, microsecond=0)
    elif size is WindowSize.DAY:
        local = _local_midnight(local.year, local.month, local.day, tz)
    else:
        local = _local_midnight(local.year, local.month, 1, tz)
    return local


def _next_civil(start: datetime, size: WindowSize, tz: ZoneInfo) -> datetime:
    """The start of the next civil day or month."""
    local = start.astimezone(tz)
    if size is WindowSize.DAY:
        day = local.date() + timedelta(days=1)
        return _local_midnight(day.year, day.month, day.day, tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return _local_midnight(year, month, 1, tz)


def _next_wall(at_us: int, offset: int, unit_us: int, tz: ZoneInfo) -> tuple[int, int]:
    """The first instant after `at` where the wall clock in `tz` starts a new minute or hour,
    and the UTC offset there (`offset` is the one at `at`).

    Aware-datetime arithmetic steps the wall clock and so skips the repeated hour when clocks go
    back; stepping absolute time misaligns after a 30-minute change (Lord Howe). Within one UTC
    offset the next boundary is plain arithmetic; an offset change is itself a boundary when the
    clock lands on a whole unit there or jumps into another one.
    """
    candidate = ((at_us + offset) // unit_us + 1) * unit_us - offset
    if _offset_us(candidate, tz) == offset:
        return candidate, offset
    lo, hi = at_us, candidate  # the offset changes in (lo, hi]: find the first changed instant
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _offset_us(mid, tz) == offset else (lo, mid)
    changed = _offset_us(hi, tz)
    wall = hi + changed
    if wall % unit_us == 0 or wall // unit_us != (hi - 1 + offset) // unit_us:
        return hi, changed
    return _next_wall(hi, changed, unit_us, tz)


def _offset_us(at_us: int, tz: ZoneInfo) -> int:
    offset = from_micros(at_us).astimezone(tz).utcoffset()
    assert offset is not None
    return offset // timedelta(microseconds=1)


def _local_midnight(year: int, month: int, day: int, tz: ZoneInfo) -> datetime:
    """The first instant of a civil day (a zone may skip midnight on a DST change)."""
    naive = datetime(year, month, day)
    for minutes in range(0, 24 * 60, 15):
        candidate = (naive + timedelta(minutes=minutes)).replace(tzinfo=tz)
        # An instant that round-trips through UTC exists; a skipped one does not.
        back = candidate.astimezone(ZoneInfo("UTC")).astimezone(tz)
        if back.replace(tzinfo=None) == candidate.replace(tzinfo=None):
            return candidate.replace(fold=0)
    raise ValueError(f"no start of day for {year}-{month}-{day} in {tz}")


def cover(start_us: int, end_us: int, widths: tuple[int, ...] = BUCKET_WIDTHS_US) -> list[Segment]:
    """Segments covering exactly [start, end): widest aligned buckets first, raw remainder."""
    if end_us <= start_us:
        return []
    if not widths:
        return [Segment(RAW, start_us, end_us)]
    width, narrower = widths[0], widths[1:]
    lo = -(-start_us // width) * width
    hi = end_us // width * width
    if lo >= hi:
        return cover(start_us, end_us, narrower)
    return [
        *cover(start_us, lo, narrower),
        Segment(width, lo, hi),
        *cover(hi, end_us, narrower),
    ]
