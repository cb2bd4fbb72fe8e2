"""Window planning: wall-clock windows in any zone, and exact bucket covers of them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.metering.reference import (
    DAY_US,
    HOUR_US,
    MINUTE_US,
    naive_aligned_windows,
    naive_windows,
    us,
)

from allotment.metering.windows import RAW, WindowSize, aligned, cover, windows

# UTC instants where each zone's offset changes in 2026 (ranges are drawn around them).
CHANGES = {
    "UTC": [],
    "Asia/Kolkata": [],
    "Asia/Kathmandu": [],
    "America/New_York": ["2026-03-08T07:00", "2026-11-01T06:00"],
    "Europe/Berlin": ["2026-03-29T01:00", "2026-10-25T01:00"],
    "Australia/Lord_Howe": ["2026-04-04T15:00", "2026-10-03T15:30"],  # 30-minute changes
    "America/Santiago": ["2026-04-05T03:00", "2026-09-06T04:00"],  # skips midnight in September
    "America/Havana": ["2026-03-08T05:00", "2026-11-01T05:00"],  # repeats midnight in November
}
SPAN_US = {"MINUTE": 3 * HOUR_US, "HOUR": 3 * DAY_US, "DAY": 40 * DAY_US, "MONTH": 100 * DAY_US}
YEARS_US = (us(datetime(1995, 1, 1, tzinfo=UTC)), us(datetime(2035, 1, 1, tzinfo=UTC)))


def _instant(text: str) -> int:
    return us(datetime.fromisoformat(text).replace(tzinfo=UTC))


@st.composite
def ranges(draw: st.DrawFn, size: str) -> tuple[str, int, int]:
    """A zone and a [start, end) near one of its offset changes, or anywhere in 40 years."""
    zone = draw(st.sampled_from(sorted(CHANGES)))
    near = [_instant(text) for text in CHANGES[zone]]
    use_change = bool(near) and draw(st.booleans())
    anchor = draw(st.sampled_from(near)) if use_change else draw(st.integers(*YEARS_US))
    start = anchor - draw(st.integers(0, SPAN_US[size]))
    return zone, start, start + draw(st.integers(1, SPAN_US[size]))


@pytest.mark.parametrize("size", ["MINUTE", "HOUR", "DAY", "MONTH"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_windows_start_where_the_wall_clock_starts_a_unit(size: str, data: st.DataObject) -> None:
    """Every window boundary is a wall-clock boundary in the zone, and every such boundary is one."""
    zone, start, end = data.draw(ranges(size))
    tz = ZoneInfo(zone)
    assert windows(start, end, WindowSize(size), tz) == naive_windows(start, end, size, tz)


@pytest.mark.parametrize("size", ["MINUTE", "HOUR", "DAY", "MONTH"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_whole_windows_reach_past_the_range_to_wall_clock_boundaries(size: str, data: st.DataObject) -> None:
    """The windows rows are labelled with start and end on wall-clock boundaries, even where
    `from` and `to` do not."""
    zone, start, end = data.draw(ranges(size))
    tz = ZoneInfo(zone)
    assert aligned(start, end, WindowSize(size), tz) == naive_aligned_windows(start, end, size, tz)


def test_a_berlin_day_from_utc_midnight_is_the_whole_berlin_day() -> None:
    """From 00:00Z on 2026-11-20 the first Berlin day is 19 Nov 23:00Z to 20 Nov 23:00Z."""
    tz = ZoneInfo("Europe/Berlin")
    start = _instant("2026-11-20T00:00")
    assert aligned(start, start + DAY_US, WindowSize.DAY, tz) == [
        (_instant("2026-11-19T23:00"), _instant("2026-11-20T23:00")),
        (_instant("2026-11-20T23:00"), _instant("2026-11-21T23:00")),
    ]


def test_a_month_window_is_the_calendar_month_for_a_few_days_of_it() -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = _instant("2026-11-20T00:00")
    assert aligned(start, start + 2 * DAY_US, WindowSize.MONTH, tz) == [
        (_instant("2026-10-31T23:00"), _instant("2026-11-30T23:00")),
    ]


@settings(deadline=None)
@given(
    size=st.sampled_from([None, *WindowSize]),
    zone=st.sampled_from(sorted(CHANGES)),
    start=st.integers(*YEARS_US),
    length=st.integers(1, 3 * DAY_US),
)
def test_windows_are_contiguous_and_cover_the_range(
    size: WindowSize | None, zone: str, start: int, length: int
) -> None:
    """Windows are non-empty, touch end to start, and span exactly [from, to)."""
    spans = windows(start, start + length, size, ZoneInfo(zone))
    assert spans[0][0] == start and spans[-1][1] == start + length
    assert all(lo < hi for lo, hi in spans)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_empty_range_has_no_windows() -> None:
    assert windows(10, 10, WindowSize.HOUR, ZoneInfo("UTC")) == []


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", "2026-03-08", 23),
        ("America/New_York", "2026-11-01", 25),
        ("Europe/Berlin", "2026-03-29", 23),
        ("Europe/Berlin", "2026-10-25", 25),
        ("Australia/Lord_Howe", "2026-10-04", 23.5),
        ("Australia/Lord_Howe", "2026-04-05", 24.5),
        ("Asia/Kathmandu", "2026-03-08", 24),
    ],
)
def test_days_with_a_clock_change_are_shorter_or_longer(zone: str, day: str, hours: float) -> None:
    """A DAY window is the civil day: 23 or 25 hours (23.5 or 24.5 on Lord Howe) when clocks change."""
    tz = ZoneInfo(zone)
    midnight = us(datetime.fromisoformat(day).replace(tzinfo=tz))
    lo, hi = windows(midnight, midnight + 2 * DAY_US, WindowSize.DAY, tz)[0]
    assert (lo, (hi - lo) / HOUR_US) == (midnight, hours)


def test_day_window_starts_at_the_first_instant_when_midnight_is_skipped() -> None:
    """Chile skips 00:00 on 2026-09-06: that day starts at 01:00 local."""
    tz = ZoneInfo("America/Santiago")
    start = us(datetime(2026, 9, 5, 12, tzinfo=tz))
    spans = windows(start, start + 2 * DAY_US, WindowSize.DAY, tz)
    assert spans[1][0] == us(datetime(2026, 9, 6, 1, tzinfo=tz)) == _instant("2026-09-06T04:00")


def test_repeated_hour_is_two_hour_windows() -> None:
    """When New York falls back, 01:00-02:00 happens twice and each is its own HOUR window."""
    tz = ZoneInfo("America/New_York")
    start = _instant("2026-11-01T04:00")
    lengths = [(hi - lo) / MINUTE_US for lo, hi in windows(start, start + 4 * HOUR_US, WindowSize.HOUR, tz)]
    assert lengths == [60, 60, 60, 60]


def test_minute_windows_stay_one_minute_when_clocks_go_back() -> None:
    """01:59 EDT is followed by 01:00 EST: the minute after it is not 61 minutes long."""
    tz = ZoneInfo("America/New_York")
    start = _instant("2026-11-01T05:58")
    spans = windows(start, start + 4 * MINUTE_US, WindowSize.MINUTE, tz)
    assert spans == [(start + i * MINUTE_US, start + (i + 1) * MINUTE_US) for i in range(4)]


def test_no_window_size_is_one_window() -> None:
    assert windows(5, 10_000, None, ZoneInfo("Asia/Kathmandu")) == [(5, 10_000)]


@given(start=st.integers(*YEARS_US), length=st.integers(1, 3 * DAY_US))
def test_cover_tiles_the_range_with_aligned_buckets(start: int, length: int) -> None:
    """Segments are disjoint and contiguous, span exactly [start, end), and buckets are aligned."""
    segments = cover(start, start + length)
    assert segments[0].start_us == start and segments[-1].end_us == start + length
    assert all(a.end_us == b.start_us for a, b in itertools.pairwise(segments))
    for s in segments:
        assert s.start_us < s.end_us
        if s.width_us != RAW:
            assert s.start_us % s.width_us == 0 and s.end_us % s.width_us == 0


@given(start=st.integers(*YEARS_US), length=st.integers(1, 3 * DAY_US))
def test_cover_uses_the_widest_bucket_that_fits(start: int, length: int) -> None:
    """No narrower segment (or raw edge) overlaps a whole aligned wider bucket inside the range."""
    end = start + length
    for s in cover(start, end):
        for width in (w for w in (DAY_US, HOUR_US, MINUTE_US) if w > s.width_us):
            first, last = s.start_us // width * width, (s.end_us - 1) // width * width
            for bucket in (first, first + width, last):
                inside = start <= bucket and bucket + width <= end
                assert not (inside and bucket < s.end_us and s.start_us < bucket + width)
