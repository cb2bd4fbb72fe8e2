"""How far and for how long a customer ran above what it paid for (pure: no I/O).

The seats gauge at an instant is the number of leases covering it; a lease covers
[activated, ended). The terms in force (the customer's seats entitlement rows, one at a time)
say the soft limit past which seats are overdraft. `seat_overdraft` sweeps the change points of
both over a window and reports the time above the soft limit, the seat-hours above it, the peak
and each episode (a stretch of overdraft without a break). Only time under some terms counts.

Invariants (tested): splitting a window in two and adding the parts' seconds and seat-hours gives
the whole window's; overdraft is zero whenever the gauge never passes the soft limit.

A metered counter keeps one number per period, and the period's usage at each instant a grant
started or ended inside it (docs/grants.md). Between two such instants the limits stand still,
so `metered_peak` judges each stretch by the usage at its end against the limits in force
during it: a top-up bought after an overdraft does not hide it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from allotment.entitlements.engine import Grant, ends_at, raised_by

ZERO = Decimal(0)
_HOUR = Decimal(3600)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Lease:
    """One item holding a seat over [start, end); end None: still held."""

    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Terms:
    """Seats terms in force over [start, end): past `soft_limit` active seats are overdraft."""

    start: datetime
    end: datetime | None
    soft_limit: Decimal


@dataclass(frozen=True)
class Episode:
    """A stretch of overdraft; ended_at None when it lasts to the end of the window."""

    started_at: datetime
    ended_at: datetime | None
    peak: int  # most seats active during it
    peak_over: Decimal  # most seats above the soft limit during it


@dataclass(frozen=True)
class SeatOverdraft:
    peak: int  # most seats active at once while terms were in force
    seconds_over: Decimal
    seat_seconds_over: Decimal  # seats above the soft limit times seconds (exact)
    episodes: tuple[Episode, ...]

    @property
    def seat_hours_over(self) -> Decimal:
        return self.seat_seconds_over / _HOUR

    @property
    def peak_over(self) -> Decimal:
        return max((e.peak_over for e in self.episodes), default=ZERO)


def seat_overdraft(
    leases: Iterable[Lease], terms: Sequence[Terms], *, start: datetime, end: datetime
) -> SeatOverdraft:
    """The overdraft of the gauge the leases make, under `terms`, within [start, end)."""
    moves: dict[datetime, int] = {}
    active = 0
    for lease in leases:
        if lease.end is not None and lease.end <= start or lease.start >= end or lease.end == lease.start:
            continue
        if lease.start <= start:
            active += 1
        else:
            moves[lease.start] = moves.get(lease.start, 0) + 1
        if lease.end is not None and lease.end < end:
            moves[lease.end] = moves.get(lease.end, 0) - 1
    cuts = {t for term in terms for t in (term.start, term.end) if t is not None and start < t < end}
    points = sorted(set(moves) | cuts)
    peak, seconds, seat_seconds = 0, ZERO, ZERO
    episodes: list[Episode] = []
    current: Episode | None = None  # the episode in progress (ended_at None)
    for left, right in zip([start, *points], [*points, end], strict=True):
        active += moves.get(left, 0) if left != start else 0
        soft = _soft_at(terms, left)
        if soft is None:
            over = ZERO
        else:
            peak = max(peak, active)
            over = max(ZERO, active - soft)
        if over > 0:
            span = _seconds(right - left)
            seconds += span
            seat_seconds += over * span
            if current is None:
                current = Episode(left, None, active, over)
            else:
                current = replace(current, peak=max(current.peak, active), peak_over=max(current.peak_over, over))
        elif current is not None:
            episodes.append(replace(current, ended_at=left))
            current = None
    if current is not None:
        episodes.append(current)
    return SeatOverdraft(peak, seconds, seat_seconds, tuple(episodes))


@dataclass(frozen=True)
class MeteredPeak:
    """A period's usage and soft limit (raised by grants) when it stood furthest above it."""

    usage: Decimal
    soft_limit: Decimal

    @property
    def overage(self) -> Decimal:
        return max(ZERO, self.usage - self.soft_limit)


def metered_peak(grants: Sequence[Grant], soft_limit: Decimal, usage: Decimal, *, last: datetime) -> MeteredPeak:
    """The stretch of a period, up to its `last` instant (when usage stood at `usage`), that ran
    furthest above the row's `soft_limit` raised by the grants live in it; the earliest of equals.

    `grants` are as the period stood at `last` (standing.standing): those that started or ended
    inside it carry the usage at that instant. Usage within a period only grows (a correction
    lowering it is not seen between two known instants), so a stretch peaks at its end.
    """
    stretches = [MeteredPeak(used, soft_limit + raised_by(grants, t - _TICK)) for t, used in sorted(_known(grants, last))]
    stretches.append(MeteredPeak(usage, soft_limit + raised_by(grants, last)))
    return max(stretches, key=lambda p: p.usage - p.soft_limit)


def _known(grants: Iterable[Grant], last: datetime) -> Iterable[tuple[datetime, Decimal]]:
    """(instant, the period's usage then) of each grant start and end inside the period by `last`."""
    for grant in grants:
        if grant.usage_at_start is not None and grant.effective_at <= last:
            yield grant.effective_at, grant.usage_at_start
        end = ends_at(grant)
        if grant.usage_at_end is not None and end is not None and end <= last:
            yield end, grant.usage_at_end


def _soft_at(terms: Sequence[Terms], at: datetime) -> Decimal | None:
    for term in terms:
        if term.start <= at and (term.end is None or at < term.end):
            return term.soft_limit
    return None


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta // timedelta(microseconds=1)).scaleb(-6)
