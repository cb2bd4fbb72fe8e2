"""How far and for how long a customer ran above the seats it paid for (pure: no I/O).

The seats gauge at an instant is the number of leases covering it; a lease covers
[activated, ended). The terms in force (the customer's seats entitlement rows, one at a time)
say the soft limit past which seats are overdraft. `seat_overdraft` sweeps the change points of
both over a window and reports the time above the soft limit, the seat-hours above it, the peak
and each episode (a stretch of overdraft without a break). Only time under some terms counts.

Invariants (tested): splitting a window in two and adding the parts' seconds and seat-hours gives
the whole window's; overdraft is zero whenever the gauge never passes the soft limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

ZERO = Decimal(0)
_HOUR = Decimal(3600)


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


def _soft_at(terms: Sequence[Terms], at: datetime) -> Decimal | None:
    for term in terms:
        if term.start <= at and (term.end is None or at < term.end):
            return term.soft_limit
    return None


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta // timedelta(microseconds=1)).scaleb(-6)
