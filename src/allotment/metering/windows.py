"""Pure time planning for queries: windows in a time zone, and how to cover them with buckets.

Rollups are kept at three bucket widths (minute, hour, UTC day). A window [start, end) is
covered greedily by the widest whole buckets that fit, then narrower ones at the edges, and
the sub-minute remainder (if `from`/`to` carry seconds) is read from the raw event log, so every
answer is exact whatever the window time zone (DST and 30/45-minute offsets included).
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


@dataclass(frozen=True)
class Segment:
    width_us: int  # RAW, or one of BUCKET_WIDTHS_US
    start_us: int
    end_us: int


def windows(
    start_us: int, end_us: int, size: WindowSize | None, tz: ZoneInfo
) -> list[tuple[int, int]]:
    """Windows aligned to `size` in `tz`, clipped to [start, end); one window when size is None."""
    if end_us <= start_us:
        return []
    if size is None:
        return [(start_us, end_us)]
    out = []
    cursor = _floor_local(from_micros(start_us), size, tz)
    while True:
        nxt = _next_local(cursor, size, tz)
        lo, hi = max(to_micros(cursor), start_us), min(to_micros(nxt), end_us)
        if lo < hi:
            out.append((lo, hi))
        if to_micros(nxt) >= end_us:
            return out
        cursor = nxt


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


def _next_local(start: datetime, size: WindowSize, tz: ZoneInfo) -> datetime:
    """The next window boundary; minutes and hours are absolute, days and months are civil."""
    if size is WindowSize.MINUTE:
        return start + timedelta(minutes=1)
    if size is WindowSize.HOUR:
        # An hour window in a 30/45-minute-offset zone is still aligned to the local hour.
        return (start.astimezone(tz) + timedelta(hours=1)).astimezone(tz)
    local = start.astimezone(tz)
    if size is WindowSize.DAY:
        day = local.date() + timedelta(days=1)
        return _local_midnight(day.year, day.month, day.day, tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return _local_midnight(year, month, 1, tz)


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
