"""Recurring grants as a chain of ordinary grants (pure: no I/O, time as a parameter).

A recurring grant starts over with its whole amount at every step of its recurrence (a
calendar interval from an anchor, in a time zone: `periods.UsagePeriod`): what it still held
is forfeit, what it had paid for stays paid. That is exactly a chain of grants, one per
recurrence, each effective from one step and expiring at the next (or at the grant's own
expiry or void, whichever is first), so the engine burns, rolls over and ends them as any
other grant, and nothing in it knows about recurrence.

An instance's id is the grant's id and the index of its step (`grt_…@3`): unique, so burn
results keep them apart, and `grant_id_of` maps it back for display.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from allotment.entitlements.engine import Grant
from allotment.entitlements.periods import UsagePeriod, boundary, index_at, period_at

_SEPARATOR = "@"


def grant_id_of(instance_id: str) -> str:
    """The id of the grant an instance belongs to (a plain grant's id is its own)."""
    return instance_id.split(_SEPARATOR, 1)[0]


def instances(grant: Grant, every: UsagePeriod, *, after: datetime, until: datetime) -> list[Grant]:
    """The instances of `grant` that are still live after `after` and effective by `until`.

    Each holds the grant's whole amount; one that would begin after the grant ended (expiry
    or void) is left out.
    """
    end = _end(grant)
    return [
        replace(grant, id=f"{grant.id}{_SEPARATOR}{n}", effective_at=start,
                expires_at=stop if end is None or stop < end else grant.expires_at)
        for n, start, stop in _steps(grant, every, after, until)
        if end is None or start < end
    ]


def starts_within(grant: Grant, every: UsagePeriod, *, after: datetime, until: datetime) -> list[datetime]:
    """The instants in (after, until] at which `grant` starts over, before it ends."""
    end = _end(grant)
    return [start for n, start, _ in _steps(grant, every, after, until)
            if after < start and start > grant.effective_at and (end is None or start < end)]


def next_start(grant: Grant, every: UsagePeriod, after: datetime) -> datetime | None:
    """The first instant after `after` at which `grant` starts over, None once it has ended."""
    upcoming = period_at(every, max(after, grant.effective_at))[1]
    end = _end(grant)
    return upcoming if upcoming is not None and (end is None or upcoming < end) else None


def live_from(grant: Grant, every: UsagePeriod, at: datetime) -> datetime:
    """When the instance live at `at` (or the first one after it) became effective."""
    if at <= grant.effective_at:
        return grant.effective_at
    return max(grant.effective_at, period_at(every, at)[0])


def _steps(grant: Grant, every: UsagePeriod, after: datetime, until: datetime) -> Iterator[tuple[int, datetime, datetime]]:
    """(index, start, next step) of each step with start <= until whose instance lasts past
    `after`, with the start clamped to the grant's own effective time."""
    first = max(after, grant.effective_at)
    if first > until:
        return
    n = index_at(every, first)
    while (start := max(boundary(every, n), grant.effective_at)) <= until:
        stop = boundary(every, n + 1)
        if stop > after:
            yield n, start, stop
        n += 1


def _end(grant: Grant) -> datetime | None:
    ends = [t for t in (grant.expires_at, grant.voided_at) if t is not None]
    return min(ends) if ends else None
