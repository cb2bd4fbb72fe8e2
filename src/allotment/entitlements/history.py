"""A metered entitlement's history: usage per window, and burn-down per segment.

Windows are those of the asked size over the whole range, cut to it, those without usage too.

Every instant is judged as the value at a past instant is (`state.judged`): the counter of the
usage period holding it, less the usage its customer's events reported for later instants of
that period. Holds (reservations) are left out: they are not usage. So a history counts the
usage its customer's events reported; usage that only checks consumed counts from the start
of its period, as it does for a past value.

Segments run between the usage period's resets and the instants a grant of the period started
or ended, so within one nothing but usage changes: what each grant burned in it is what it
held at its start less what it held at its end.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import accumulate, pairwise
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import metered_usage
from allotment.entitlements.check import Counted, read_usage, units, usage_period
from allotment.entitlements.engine import ZERO, ends_at
from allotment.entitlements.models import CustomerEntitlement, Feature
from allotment.entitlements.periods import period_at
from allotment.entitlements.state import EntitlementState, judged
from allotment.errors import ValidationFailed
from allotment.metering import query as meter_query
from allotment.metering.models import Meter
from allotment.metering.windows import TooManyWindows, WindowSize, aligned, clip
from allotment.types import from_micros, to_micros

MAX_SEGMENTS = 1000
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    usage: Decimal  # what the feature's meter reports for the customer in the window (maybe 0)
    at_start: EntitlementState


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    at_start: EntitlementState
    at_end: EntitlementState  # as it stood at the segment's last instant


class _Reads:
    """One counter read per usage period, and the customer's events read once."""

    def __init__(self, session: AsyncSession, row: CustomerEntitlement, key: str, *, end: datetime) -> None:
        self.session, self.row, self.key, self.end = session, row, key, end
        self._counted: dict[datetime, Counted] = {}
        self._later: dict[int, tuple[list[int], list[int]]] = {}

    async def load_events(self, since: datetime) -> None:
        by_period: dict[int, list[tuple[int, int]]] = {}
        for period_us, time_us, micros in await metered_usage.reported_events(self.session, self.row, since=since):
            by_period.setdefault(period_us, []).append((time_us, micros))
        for period_us, events in by_period.items():
            events.sort()
            self._later[period_us] = ([t for t, _ in events], list(accumulate(m for _, m in events)))

    async def counted(self, at: datetime) -> Counted:
        start, until = period_at(usage_period(self.row), at)
        if start not in self._counted:
            # Read as of the period's last instant asked about: its grants, those that start
            # after `at` too (the engine judges each instant by what was live then).
            last = min(until or self.end, self.end) - _TICK
            self._counted[start] = replace(await read_usage(self.session, self.row, last), reserved=ZERO)
        return self._counted[start]

    async def state(self, at: datetime, *, cut: datetime) -> EntitlementState:
        """The state at `at`, counting the events of its period before `cut`."""
        counted = await self.counted(at)
        return judged(self.row, self.key, counted, at, later=self._reported_from(counted, cut))

    def _reported_from(self, counted: Counted, cut: datetime) -> Decimal:
        times, totals = self._later.get(to_micros(counted.period_start), ([], []))
        i = bisect_left(times, to_micros(cut))
        return units(totals[-1] - (totals[i - 1] if i else 0)) if i < len(times) else ZERO


async def history(
    session: AsyncSession,
    row: CustomerEntitlement,
    key: str,
    *,
    start: datetime,
    end: datetime,
    size: WindowSize,
    tz: ZoneInfo,
) -> tuple[list[Window], list[Segment]]:
    """Windows with usage and burn-down segments of `row` over [start, end), which the caller
    keeps within the row's life and the past."""
    reads = _Reads(session, row, key, end=end)
    await reads.load_events(start)
    found = []
    for lo, hi, usage in await _metered(session, row, start=start, end=end, size=size, tz=tz):
        found.append(Window(lo, hi, usage, await reads.state(lo, cut=lo)))
    cuts = await _cuts(reads, start, end)
    segments = [
        Segment(lo, hi, await reads.state(lo, cut=lo), await reads.state(hi - _TICK, cut=hi))
        for lo, hi in pairwise(cuts)
    ]
    return found, segments


async def _metered(
    session: AsyncSession, row: CustomerEntitlement, *, start: datetime, end: datetime, size: WindowSize, tz: ZoneInfo
) -> list[tuple[datetime, datetime, Decimal]]:
    """(start, end, usage) of every window of `size` in `tz` over [start, end), cut to it (so
    the windows cover it exactly), those without usage too (usage 0), as OpenMeter lists them.
    Usage is the feature's meter's (its rollups) for the customer's subjects and the feature's
    group filter."""
    start_us, end_us = to_micros(start), to_micros(end)
    too_many = ValidationFailed.on(
        "window_size", f"too many {size} windows in the range; at most {meter_query.MAX_WINDOWS} per query"
    )
    try:
        labels = aligned(start_us, end_us, size, tz, limit=meter_query.MAX_WINDOWS)
    except TooManyWindows:
        raise too_many from None
    if len(labels) > meter_query.MAX_WINDOWS:
        raise too_many
    used: dict[int, Decimal] = {}
    feature = await session.get(Feature, row.feature_id)
    meter = await session.get(Meter, feature.meter_id) if feature and feature.meter_id else None
    if feature is not None and meter is not None and meter.deleted_at is None:
        q = meter_query.MeterQuery(
            start_us=start_us, end_us=end_us, window_size=size, tz=tz, customers=[row.customer_id], dense=False,
            filter_group_by={k: [str(v)] for k, v in (feature.meter_group_filter or {}).items()},
        )  # fmt: skip
        for r in await meter_query.query(session, row.tenant_id, meter, q):
            used[r.window_start_us] = used.get(r.window_start_us, ZERO) + (r.value or ZERO)
    return [
        (from_micros(lo), from_micros(hi), used.get(label, ZERO))
        for label, (lo, hi) in zip((lo for lo, _ in labels), clip(labels, start_us, end_us), strict=True)
    ]


async def _cuts(reads: _Reads, start: datetime, end: datetime) -> list[datetime]:
    """Where segments begin and end: the range's bounds, resets, grant starts and ends."""
    cuts = {start, end}
    at = start
    while at < end:
        counted = await reads.counted(at)
        until = min(end, counted.period_end or end)
        for grant in counted.grants:
            cuts.update(t for t in (grant.effective_at, ends_at(grant)) if t is not None and at < t < until)
        cuts.add(until)
        at = until
        if len(cuts) > MAX_SEGMENTS + 1:
            raise ValidationFailed.on("from", f"the range has over {MAX_SEGMENTS} segments; ask for less")
    return sorted(cuts)
