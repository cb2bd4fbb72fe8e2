"""Usage periods: contiguous, anchored to local wall-clock time, calendar-clamped."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.entitlements.periods import Interval, UsagePeriod, boundary, period_at

ZONES = [
    "UTC",
    "America/New_York",  # gap and repeat at 02:00 / 01:00
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute changes
    "America/Santiago",  # skips midnight in September
    "America/Havana",  # repeats midnight in November
    "Asia/Kathmandu",  # +05:45
    "Pacific/Apia",  # skipped all of 2011-12-30
]
STEPPING = [Interval.DAY, Interval.WEEK, Interval.MONTH, Interval.YEAR]
REACH = {  # how far from the anchor `at` is drawn
    Interval.DAY: timedelta(days=60),
    Interval.WEEK: timedelta(days=400),
    Interval.MONTH: timedelta(days=3 * 366),
    Interval.YEAR: timedelta(days=12 * 366),
}
US = timedelta(microseconds=1)
EXAMPLES = settings(max_examples=120, deadline=None)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(at: datetime, tz: ZoneInfo) -> datetime:
    return at.astimezone(tz).replace(tzinfo=None)


def exists(wall: datetime, tz: ZoneInfo) -> bool:
    return local(wall.replace(tzinfo=tz).astimezone(UTC), tz) == wall


@st.composite
def walls(draw: st.DrawFn) -> datetime:
    """Local wall times biased to month ends and to the hours clocks change at."""
    year = draw(st.integers(2000, 2035))
    month = draw(st.integers(1, 12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.one_of(st.integers(1, last), st.integers(max(1, last - 3), last)))
    hour = draw(st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 23)))
    minute = draw(st.sampled_from([0, 15, 30, 59]))
    return datetime(year, month, day, hour, minute, draw(st.sampled_from([0, 30])))


@st.composite
def cases(draw: st.DrawFn) -> tuple[UsagePeriod, datetime]:
    tz = ZoneInfo(draw(st.sampled_from(ZONES)))
    interval = draw(st.sampled_from(STEPPING))
    anchor = draw(walls()).replace(tzinfo=tz, fold=draw(st.integers(0, 1)))
    reach = REACH[interval]
    offset = draw(st.timedeltas(-reach, reach))
    return UsagePeriod(interval, anchor, tz), anchor.astimezone(UTC) + offset


def naive_first_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """Reference: scan in 30-second steps until the local clock reaches `wall`.

    Drawn walls sit on 0 or 30 seconds and zone offsets and transitions on whole minutes, so
    the scan lands exactly on the answer; it starts early enough for any UTC offset.
    """
    at = wall.replace(tzinfo=UTC) - timedelta(hours=15)
    while local(at, tz) < wall:
        at += timedelta(seconds=30)
    return at


def naive_wall(period: UsagePeriod, n: int) -> datetime:
    """Reference: the n-th boundary's local wall time, stepping the calendar by hand."""
    wall = local(period.anchor, period.tz)
    if period.interval in (Interval.DAY, Interval.WEEK):
        return wall + timedelta(days=n * (1 if period.interval is Interval.DAY else 7))
    months = wall.month - 1 + (n if period.interval is Interval.MONTH else 12 * n)
    year, month, day = wall.year + months // 12, months % 12 + 1, wall.day
    while True:
        try:
            return wall.replace(year=year, month=month, day=day)
        except ValueError:  # no such day in this month: take the month's last day
            day -= 1


def naive_period(period: UsagePeriod, at: datetime) -> tuple[datetime, datetime]:
    """Reference: map the boundaries near `at` one by one and pick the pair around it."""
    wall, anchor = local(at, period.tz), local(period.anchor, period.tz)
    guess = {
        Interval.DAY: (wall.date() - anchor.date()).days,
        Interval.WEEK: (wall.date() - anchor.date()).days // 7,
        Interval.MONTH: (wall.year - anchor.year) * 12 + wall.month - anchor.month,
        Interval.YEAR: wall.year - anchor.year,
    }[period.interval]
    ns = range(guess - 2, guess + 3)
    starts = [
        period.anchor if n == 0 else naive_first_instant(naive_wall(period, n), period.tz)
        for n in ns
    ]
    for start, end in itertools.pairwise(starts):
        if start <= at < end:
            return start, end
    raise AssertionError("no reference period contains at")


@EXAMPLES
@given(cases())
def test_at_lies_in_its_period(case: tuple[UsagePeriod, datetime]) -> None:
    """Every instant belongs to the period returned for it."""
    period, at = case
    start, end = period_at(period, at)
    assert end is not None
    assert start <= at < end


@EXAMPLES
@given(cases())
def test_periods_are_contiguous_and_do_not_overlap(case: tuple[UsagePeriod, datetime]) -> None:
    """The next period starts where this one ends; the instant before the start is in the previous."""
    period, at = case
    start, end = period_at(period, at)
    assert end is not None and start < end
    assert period_at(period, end)[0] == end
    assert period_at(period, start - US)[1] == start


@EXAMPLES
@given(cases())
def test_boundaries_keep_the_anchors_local_wall_clock_time(
    case: tuple[UsagePeriod, datetime],
) -> None:
    """A start reads the anchor's local time, or is the end of the gap that skipped it."""
    period, at = case
    start, _ = period_at(period, at)
    anchor_wall = local(period.anchor, period.tz)
    start_wall = local(start, period.tz)
    if start == period.anchor or start_wall.time() == anchor_wall.time():
        return
    # Otherwise the clock jumped over the wanted time (on start's date, or the day before when
    # the gap crossed midnight) and start is where the gap ended.
    wanted = [
        datetime.combine(start_wall.date() - timedelta(days=back), anchor_wall.time())
        for back in (0, 1)
    ]
    assert any(
        not exists(w, period.tz) and local(start - US, period.tz) < w < start_wall for w in wanted
    )


@EXAMPLES
@given(cases())
def test_boundaries_follow_the_calendar(case: tuple[UsagePeriod, datetime]) -> None:
    """Weekly keeps the weekday; monthly and yearly keep the day, clamped to the month's end."""
    period, at = case
    start, _ = period_at(period, at)
    anchor_wall = local(period.anchor, period.tz)
    day = local(start, period.tz)
    if day.time() < anchor_wall.time():  # the wanted time fell in a gap that crossed midnight
        day -= timedelta(days=1)
    if period.interval is Interval.WEEK:
        assert day.weekday() == anchor_wall.weekday()
    if period.interval in (Interval.MONTH, Interval.YEAR):
        assert day.day == min(anchor_wall.day, calendar.monthrange(day.year, day.month)[1])
    if period.interval is Interval.YEAR:
        assert day.month == anchor_wall.month


@settings(max_examples=60, deadline=None)
@given(cases())
def test_period_matches_a_naive_calendar_scan(case: tuple[UsagePeriod, datetime]) -> None:
    """The period equals hand-stepped local dates mapped by scanning the clock."""
    period, at = case
    assert period_at(period, at) == naive_period(period, at)


def test_monthly_anchor_on_the_31st_clamps_and_returns() -> None:
    """Jan 31 -> Feb 28 (Feb 29 in leap years) -> Mar 31 -> Apr 30 -> May 31."""
    period = UsagePeriod(Interval.MONTH, utc(2027, 1, 31, 9), ZoneInfo("UTC"))
    starts = [period_at(period, utc(2027, m, 15))[1] for m in range(2, 7)]
    assert starts == [utc(2027, 2, 28, 9), utc(2027, 3, 31, 9), utc(2027, 4, 30, 9),
                      utc(2027, 5, 31, 9), utc(2027, 6, 30, 9)]  # fmt: skip
    assert period_at(period, utc(2028, 2, 15))[1] == utc(2028, 2, 29, 9)


def test_yearly_anchor_on_february_29_clamps_to_the_28th() -> None:
    period = UsagePeriod(Interval.YEAR, utc(2028, 2, 29), ZoneInfo("UTC"))
    assert period_at(period, utc(2029, 6, 1)) == (utc(2029, 2, 28), utc(2030, 2, 28))
    assert period_at(period, utc(2032, 6, 1)) == (utc(2032, 2, 29), utc(2033, 2, 28))


def test_monthly_boundaries_use_the_subscription_zone() -> None:
    """Midnight on the 1st in New York is 05:00 or 04:00 UTC depending on daylight saving."""
    ny = ZoneInfo("America/New_York")
    period = UsagePeriod(Interval.MONTH, datetime(2026, 1, 1, tzinfo=ny), ny)
    assert period_at(period, utc(2026, 3, 15)) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    assert period_at(period, utc(2026, 4, 1, 3, 59)) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))


def test_daily_period_keeps_local_time_across_spring_forward() -> None:
    """The day clocks spring forward is 23 hours long; the wall time stays 00:30."""
    ny = ZoneInfo("America/New_York")
    period = UsagePeriod(Interval.DAY, datetime(2026, 3, 1, 0, 30, tzinfo=ny), ny)
    start, end = period_at(period, datetime(2026, 3, 8, 12, tzinfo=ny))
    assert end is not None
    assert (local(start, ny), local(end, ny)) == (datetime(2026, 3, 8, 0, 30),
                                                  datetime(2026, 3, 9, 0, 30))  # fmt: skip
    assert end - start == timedelta(hours=23)


def test_anchor_time_skipped_by_the_clock_resets_when_the_gap_ends() -> None:
    """02:30 does not exist on 2026-03-08 in New York; that day's period starts at 03:00."""
    ny = ZoneInfo("America/New_York")
    period = UsagePeriod(Interval.DAY, datetime(2026, 3, 1, 2, 30, tzinfo=ny), ny)
    start, end = period_at(period, datetime(2026, 3, 8, 12, tzinfo=ny))
    assert start == datetime(2026, 3, 8, 3, 0, tzinfo=ny)
    assert end == datetime(2026, 3, 9, 2, 30, tzinfo=ny)


def test_anchor_time_repeated_by_the_clock_resets_at_its_first_occurrence() -> None:
    ny = ZoneInfo("America/New_York")
    period = UsagePeriod(Interval.DAY, datetime(2026, 10, 1, 1, 30, tzinfo=ny), ny)
    start, end = period_at(period, datetime(2026, 11, 1, 1, 45, fold=1, tzinfo=ny))
    assert start == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, not 01:30 EST
    assert end == utc(2026, 11, 2, 6, 30)


def test_a_skipped_calendar_day_still_yields_non_empty_periods() -> None:
    """Samoa skipped 2011-12-30 entirely; no period collapses to nothing."""
    apia = ZoneInfo("Pacific/Apia")
    period = UsagePeriod(Interval.DAY, datetime(2011, 12, 1, 12, tzinfo=apia), apia)
    starts = [boundary(period, n) for n in range(26, 33)]
    assert all(a < b for a, b in itertools.pairwise(starts))


def test_weekly_period_starts_on_the_anchors_weekday() -> None:
    period = UsagePeriod(Interval.WEEK, utc(2026, 1, 5, 8), ZoneInfo("UTC"))  # a Monday
    assert period_at(period, utc(2026, 2, 12)) == (utc(2026, 2, 9, 8), utc(2026, 2, 16, 8))


def test_periods_extend_before_the_anchor() -> None:
    period = UsagePeriod(Interval.MONTH, utc(2026, 3, 31), ZoneInfo("UTC"))
    assert period_at(period, utc(2026, 3, 1)) == (utc(2026, 2, 28), utc(2026, 3, 31))


def test_never_resetting_period_starts_at_the_anchor_and_has_no_end() -> None:
    period = UsagePeriod(Interval.NONE, utc(2026, 1, 1), ZoneInfo("Europe/Berlin"))
    assert period_at(period, utc(2040, 1, 1)) == (utc(2026, 1, 1), None)


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        UsagePeriod(Interval.DAY, datetime(2026, 1, 1), ZoneInfo("UTC"))
    period = UsagePeriod(Interval.DAY, utc(2026, 1, 1), ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="naive"):
        period_at(period, datetime(2026, 1, 2))
