"""Where a metered entitlement stands in the usage period containing `at`: grants and carry.

Checks, consumes, reservations and the state page all judge a metered row against the same
effective limits: the row's own soft and hard limits raised by what its live grants hold in
this period (`engine.decide_metered`). What a grant holds in a period follows from usage in
earlier periods (burn-down) and its rollover bounds at each reset, so `standing` replays the
periods since the oldest grant that still matters began, one counter row per period, read in
one query: O(periods in which something happened since then; idle periods are skipped),
nothing when every live grant started in this period.

The same replay gives the overage to carry into this period when the row's policy is
`carry` (overage above the previous period's soft limit, after grants). It is fixed once,
when the period's counter is first read or written by a check or first moved by ingest
(`queries.fix_carry`), and is part of `used` from then on. Later changes to the previous period do not move it.

With `included_rollover`, the replay also works out the included units the previous period
left unused, which roll into this one as a grant of the period (`ROLLED_OVER`); the replay then
starts at the row's first period.

Conventions (docs/grants.md):
- counters hold one number per period, so a past period is judged as it stood at its last
  instant: its usage burns the grants live then, in burn order, and what is left rolls over;
- a plan change ends one row and starts another: usage restarts (a new counter), grants keep
  what they held, and nothing rolls over or carries at that instant;
- a usage reset also ends one row and starts another, but that instant is a period boundary
  of the row it ended: grants and included units roll over, and its overage carries into the
  new row when the reset said so (`reset_overage`), whatever the row's own policy.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import check as checks
from allotment.entitlements import queries, recurring
from allotment.entitlements.engine import (
    DEFAULT_PRIORITY,
    ZERO,
    Grant,
    burn,
    ends_at,
    has_ended,
    raised_by,
    rollover,
    settle,
)
from allotment.entitlements.models import CustomerEntitlement, GrantRecord
from allotment.entitlements.periods import Interval, UsagePeriod, period_at
from allotment.types import as_utc, from_micros, to_micros

CARRY = "carry"
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Standing:
    """A metered row in the period containing `at`.

    `grants` hold their amount for this period (for a row that began mid-period: what they
    held when it began), and with them the included units rolled in from the previous period
    (`ROLLED_OVER`). `carry` is the overage, in millionths, still to be added to this
    period's counter; None when there is none to fix (policy `forgive`, or already fixed).
    """

    grants: tuple[Grant, ...]
    period_start: datetime
    period_end: datetime | None
    carry: int | None = None

    def extra(self, at: datetime) -> Decimal:
        """What grants add to both limits at `at` (engine.raised_by)."""
        return raised_by(self.grants, at)

    @property
    def recurs(self) -> bool:
        """Whether a grant of this period recurs (its instances stand in for it)."""
        return any(recurring.grant_id_of(g.id) != g.id for g in self.grants)

    def keeps_usage(self, at: datetime) -> bool:
        """Whether a grant of this period started or ended inside it by `at`: a write to the
        counter must first keep the usage of that instant (grant_ends.record)."""
        return any(has_ended(g, at) or g.usage_at_start is not None for g in self.grants)

    def hard_limit(self, row: CustomerEntitlement, at: datetime) -> int | None:
        """The hard limit the database enforces at `at`, in millionths (None: uncapped)."""
        return None if row.hard_limit is None else checks.millionths(row.hard_limit + self.extra(at))


# The id of the grant that stands for included units rolled over from the previous period.
ROLLED_OVER = "rolled_over"


def rolls_over(row: CustomerEntitlement) -> bool:
    """Whether unused included units of the row roll into its next period."""
    return bool(row.included_rollover) and checks.usage_period(row).interval is not Interval.NONE


def _rolled_over(amount: Decimal, start: datetime, until: datetime | None) -> Grant:
    """Units rolled into the period from `start`, spendable as included units until `until`.

    They burn with the period's own included units (the same priority and expiry), and what
    is left of both at the reset is what rolls on, so which of the two burns first changes
    nothing."""
    return Grant(id=ROLLED_OVER, amount=amount, priority=DEFAULT_PRIORITY, effective_at=start,
                 created_at=start, expires_at=until)


def _rolls_on(row: CustomerEntitlement, included_left: Decimal, left: Mapping[str, Decimal]) -> Decimal:
    """What rolls into the row's next period: its unused included units, at most the bound."""
    bound = row.included_rollover or ZERO
    return min(bound, included_left + left.get(ROLLED_OVER, ZERO))


def included_until(row: CustomerEntitlement, period_end: datetime | None) -> datetime | None:
    """When the row's included units of the period ending at `period_end` can no longer be
    spent: at the period end, or at the row's own end if that is earlier (engine.burn)."""
    ends = [t for t in (period_end, row.active_to) if t is not None]
    return min(ends) if ends else None


@dataclass(frozen=True)
class _Kept:
    """The usage kept (millionths) at each grant's start and end inside a period, by grant id;
    None, or no entry, while nothing was written since the instant (grant_ends.record)."""

    starts: Mapping[str, int | None]
    ends: Mapping[str, int | None]


def _settled(
    grants: Sequence[Grant], included: Decimal, included_ends: datetime | None,
    start: datetime, until: datetime, kept: _Kept, otherwise: Decimal,
) -> list[Grant]:
    """`grants` with the usage at each instant one of them started or ended in (start, until]
    (as kept, else `otherwise`: the counter has not moved since), and those that ended there
    with what they had paid by then (engine.settle)."""
    def usage(recorded: Mapping[str, int | None], grant: Grant) -> Decimal:
        value = recorded.get(grant.id)
        return otherwise if value is None else checks.units(value)

    marked = []
    for grant in grants:
        end = ends_at(grant)
        starts, ends = start < grant.effective_at <= until, end is not None and start < end <= until
        marked.append(grant if not (starts or ends) else replace(  # most grants have no instant here
            grant,
            usage_at_start=usage(kept.starts, grant) if starts else None,
            usage_at_end=usage(kept.ends, grant) if ends else None,
        ))
    return settle(marked, included, until, included_until=included_ends)


def recurrence_of(record: GrantRecord) -> UsagePeriod | None:
    """How a stored grant recurs, None when it does not."""
    if record.recurrence_interval is None or record.recurrence_anchor is None:
        return None
    return UsagePeriod(Interval(record.recurrence_interval), record.recurrence_anchor,
                       ZoneInfo(record.recurrence_timezone or "UTC"))


def grant_of(record: GrantRecord) -> Grant:
    return Grant(
        id=record.id, amount=record.amount, priority=record.priority,
        effective_at=record.effective_at, created_at=record.created_at,
        expires_at=record.expires_at, voided_at=record.voided_at,
        min_rollover=record.min_rollover, max_rollover=record.max_rollover,
    )


@dataclass(frozen=True)
class _Segment:
    """One usage period of one row, cut to the row's active span."""

    row: CustomerEntitlement
    period_start: datetime  # the key of its counter
    end: datetime | None
    resets: bool  # ends at a period boundary of the row (not at the row's own end mid-period)
    begins: datetime  # where its usage begins: the period start, or the row's start (segment_start)
    carries_out: bool  # whether its overage carries into what follows when it `resets`


async def standing(session: AsyncSession, row: CustomerEntitlement, at: datetime) -> Standing:
    """Grants and carry of a metered `row` in the period containing `at` (no writes)."""
    at = as_utc(at)
    start, end = period_at(checks.usage_period(row), at)
    seg_start = await segment_start(session, row, start)
    granted = await _granted(session, row, at)
    carries = carries_into(row, start)
    marked = any(_marks_within(g, seg_start, at) for g in granted)
    counter = None
    if carries or marked:
        counter = await queries.counter_state(session, *checks.counter_key(row, start))
    needs_carry = carries and (counter is None or counter[2] is None)
    since = await _since(session, row, granted, seg_start, start, needs_carry)
    records, kept = await _instances(session, row, granted, seg_start if since is None else since, at)
    carry_in, rolled = None, ZERO
    if since is None:
        grants = [g for g in records if not has_ended(g, seg_start)]
    else:
        rows = await _rows(session, row, since, at)
        counters = await _counters(session, row, rows, since, at)
        marks = sorted({from_micros(start) for _, start in counters} | _grant_times(records))
        amounts, carried, rolled = _replay(records, kept, _Walk(rows, since, at, marks), counters)
        grants = [replace(g, amount=amounts[g.id]) for g in records if not has_ended(g, seg_start)]
        carry_in = carried if needs_carry else None
    if rolled:
        grants.append(_rolled_over(rolled, seg_start, included_until(row, end)))
    if marked:
        # The usage at a grant's start or end is kept by the first write after it; until then
        # the counter has not moved since, so it still holds that usage (plus a carry not fixed yet).
        now = checks.units((counter[0] if counter else 0) + (carry_in or 0))
        grants = _settled(grants, row.included or ZERO, included_until(row, end), seg_start, at, kept, now)
    return Standing(tuple(grants), start, end, carry_in)


async def segment_start(session: AsyncSession, row: CustomerEntitlement, period_start: datetime) -> datetime:
    """Where the part of the period starting at `period_start` judged with `row` begins: the
    period start, or the row's own start when it began later without taking over its
    predecessor's counter (a row that did, checks.continues_counter, judges the whole period)."""
    if row.active_from <= period_start:
        return period_start
    before = await _predecessor(session, row)
    return period_start if before is not None and checks.continues_counter(before, row) else row.active_from


async def _predecessor(session: AsyncSession, row: CustomerEntitlement) -> CustomerEntitlement | None:
    """The customer's metered row on the feature that ended the instant `row` began."""
    found: CustomerEntitlement | None = await session.scalar(select(CustomerEntitlement).where(
        CustomerEntitlement.tenant_id == row.tenant_id, CustomerEntitlement.customer_id == row.customer_id,
        CustomerEntitlement.feature_id == row.feature_id, CustomerEntitlement.kind == "metered",
        CustomerEntitlement.active_to == row.active_from,
    ))
    return found


async def _since(
    session: AsyncSession,
    row: CustomerEntitlement,
    granted: Sequence[_Granted],
    seg_start: datetime,
    period_start: datetime,
    needs_carry: bool,
) -> datetime | None:
    """Where the replay must start, or None when nothing before this period matters.

    Every grant live at some instant from there on must be replayed from its start, and with
    `carry` the replay must start at a period whose carry is already fixed (or the row's start).
    """
    lower = seg_start
    if needs_carry:
        lower = await _carry_start(session, row, period_start - _TICK)
    if rolls_over(row):  # what rolls in follows from every earlier period of the rows rolling over
        lower = min(lower, await _rolling_since(session, row))
    while True:
        earliest = min((g.live_from(lower) for g in granted if not has_ended(g.grant, lower)), default=lower)
        if earliest >= lower:
            break
        lower = earliest
        if _carries(row):
            lower = min(lower, await _carry_start(session, row, lower))
    return None if lower >= seg_start else lower


async def _rolling_since(session: AsyncSession, row: CustomerEntitlement) -> datetime:
    """The start of the run of rows that roll over and took over from each other without a
    gap, ending with `row` (an override or plan change keeps what rolled over)."""
    current = row
    while True:
        before = await _predecessor(session, current)
        if before is None or not rolls_over(before):
            return current.active_from
        current = before


async def _carry_start(session: AsyncSession, row: CustomerEntitlement, before: datetime) -> datetime:
    """The latest period start up to `before` whose carry is fixed, else the row's start (or,
    for a row a carrying usage reset started, where the carry of the row it ended is known:
    what that row's last period carries out is the new row's first carry)."""
    bound, _ = period_at(checks.usage_period(row), max(before, row.active_from))
    latest = await queries.latest_carried(session, row.tenant_id, row.id, at_or_before=to_micros(bound))
    if latest is not None:
        return max(row.active_from, from_micros(latest))
    ended = await _predecessor(session, row) if row.reset_overage == CARRY else None
    if ended is None:
        return row.active_from
    return await _carry_start(session, ended, row.active_from - _TICK)


async def _counters(
    session: AsyncSession, row: CustomerEntitlement, rows: Sequence[CustomerEntitlement],
    since: datetime, at: datetime,
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(row id, period start) -> (used, carried) of every period of `rows` from `since` to `at`."""
    first = min(period_at(checks.usage_period(r), max(since, r.active_from))[0] for r in rows)
    return await queries.counters_between(
        session, row.tenant_id, [r.id for r in rows], to_micros(first), to_micros(at) + 1
    )


def _grant_times(records: Sequence[Grant]) -> set[datetime]:
    times = {g.effective_at for g in records}
    return times | {t for g in records for t in (g.expires_at, g.voided_at) if t is not None}


def _replay(
    records: Sequence[Grant],
    kept: _Kept,
    walk: _Walk,
    counters: dict[tuple[str, int], tuple[int, int | None]],
) -> tuple[dict[str, Decimal], int, Decimal]:
    """Each grant's amount at the start of the last segment, the overage carried into it and
    the included units rolled into it."""
    amounts = {g.id: g.amount for g in records}
    carry_in, rolled, previous = ZERO, ZERO, None
    in_play = _InPlay(records)
    seg = walk.first()
    while not walk.is_last(seg):
        assert seg.end is not None  # only the last segment can be open-ended
        grants = [replace(g, amount=amounts[g.id]) for g in in_play.during(seg.begins, seg.end)]
        rolled_in = rolled
        if rolled:
            grants.append(_rolled_over(rolled, seg.period_start, seg.end))
        used, carried = counters.get((seg.row.id, to_micros(seg.period_start)), (0, None))
        usage = checks.units(used)
        if carried is None and previous is not None and _carries_into(previous, seg):
            usage += carry_in
        last = seg.end - _TICK
        included = seg.row.included or ZERO
        grants = _settled(grants, included, seg.end, seg.begins, last, kept, usage)
        down = burn(grants, included, usage, last, included_until=seg.end)
        soft = soft_limit(seg.row) + raised_by(grants, last)
        carry_in = max(ZERO, usage - soft) if seg.carries_out else ZERO
        rolls = rolls_over(seg.row)
        rolls_on = _rolls_on(seg.row, down.included, down.grants) if seg.resets and rolls else ZERO
        own = [g for g in grants if g.id != ROLLED_OVER]
        amounts.update(rollover(own, down.grants, at=seg.end) if seg.resets else {g.id: down.grants[g.id] for g in own})
        # Idle periods may be skipped only once one would roll on what it was given (at the
        # bound, or all the included units and what came in).
        idle_keeps = not rolls or _rolls_on(seg.row, included, {ROLLED_OVER: rolls_on}) == rolls_on
        previous, rolled = seg, rolls_on if seg.resets else rolled_in
        seg = walk.after(seg, settled=seg.resets and carry_in == ZERO and idle_keeps)
        if seg.row is not previous.row and not _rolls_into(previous, seg):
            rolled = ZERO
    if previous is None or not _carries_into(previous, seg):
        carry_in = ZERO
    if previous is None or not (previous.row is seg.row and previous.resets or _rolls_into(previous, seg)):
        rolled = ZERO
    return amounts, checks.millionths(carry_in), rolled


class _InPlay:
    """The grants a segment of the replay must burn, in segments taken in time order.

    A grant that ended by a segment's start holds nothing in it and never will again, and
    one that starts at or after its end is untouched by it (engine.burn, engine.rollover keep
    its amount): leaving both out keeps a replay over many recurring instances linear in
    the periods, not in periods times instances."""

    def __init__(self, records: Sequence[Grant]) -> None:
        self._waiting = sorted(records, key=lambda g: g.effective_at, reverse=True)
        self._started: list[Grant] = []

    def during(self, begins: datetime, end: datetime) -> list[Grant]:
        while self._waiting and self._waiting[-1].effective_at < end:
            self._started.append(self._waiting.pop())
        self._started = [g for g in self._started if (ended := ends_at(g)) is None or ended > begins]
        return self._started


def _carries_into(previous: _Segment, seg: _Segment) -> bool:
    """Whether overage carried out of `previous` lands in `seg`: the next period of its row,
    or of the row that took over that period's counter."""
    return previous.resets and previous.end == seg.begins and (
        previous.row is seg.row or seg.begins == seg.period_start < seg.row.active_from
        or reset_between(previous.row, seg.row))


def _rolls_into(previous: _Segment, seg: _Segment) -> bool:
    """Whether what rolled into (or on from) `previous` holds in `seg`, of another row: the
    row that took over at that instant (an override, a plan change) rolls over too. Mid-period
    its counter took over the period's usage, so the period's roll-over stays with it."""
    return (previous.end == seg.begins and rolls_over(seg.row)
            and (previous.resets or previous.period_start == seg.period_start))


@dataclass(frozen=True)
class _Walk:
    """The periods of each row from `since` to `at`, cut to the row's active span, in order,
    without the idle ones that cannot change what the replay finds.

    `marks` (sorted) are the instants at which something happens: a counted period starts,
    a grant starts, expires or is voided. A period holding none of them burns nothing but a
    carry, and once a reset has clamped every grant to its rollover bounds, clamping again
    changes nothing (engine.rollover). So after a segment that ended at a reset with nothing
    to carry (`settled`), the walk jumps to the period of the same row holding the next mark,
    or `at`: the replay costs what happened, not how many periods passed.
    """

    rows: Sequence[CustomerEntitlement]  # in order of their start
    since: datetime
    at: datetime
    marks: Sequence[datetime]
    # `is_last` and `after` ask for the same segment in turn: each is worked out once.
    _found: dict[tuple[int, datetime], _Segment | None] = field(default_factory=dict, compare=False, repr=False)

    def first(self) -> _Segment:
        first = self._at(0, max(self.since, self.rows[0].active_from))
        assert first is not None
        return first

    def is_last(self, seg: _Segment) -> bool:
        """Whether nothing follows `seg`: the period containing `at`, or the end of the last
        row (never replayed: it is the answer's)."""
        return seg.end is None or self._at(self._index(seg), seg.end) is None

    def after(self, seg: _Segment, *, settled: bool) -> _Segment:
        """The segment to replay after `seg` (which is not the last)."""
        assert seg.end is not None
        t, row, index = seg.end, seg.row, self._index(seg)
        found = self._at(index, t)
        assert found is not None
        if settled and found.row is row and found.end is not None:
            following = bisect_left(self.marks, t)
            target = self.at if following == len(self.marks) else min(self.marks[following], self.at)
            if row.active_to is not None:
                target = min(target, row.active_to - _TICK)  # the row's last segment stays
            if target >= found.end:  # idle periods lie between: skip them
                found = self._at(index, period_at(checks.usage_period(row), target)[0])
                assert found is not None
        return found

    def _index(self, seg: _Segment) -> int:
        return next(i for i, r in enumerate(self.rows) if r is seg.row)

    def _at(self, index: int, t: datetime) -> _Segment | None:
        """The segment of rows[index] from `t`, or the first of a later row once it ended;
        None past `at` or past the last row."""
        key = (index, t)
        if key not in self._found:
            self._found[key] = self._find(index, t)
        return self._found[key]

    def _find(self, index: int, t: datetime) -> _Segment | None:
        row = self.rows[index]
        while row.active_to is not None and t >= row.active_to:
            index += 1
            if index == len(self.rows):
                return None
            row, t = self.rows[index], max(self.since, self.rows[index].active_from)
        if t > self.at:
            return None
        start, end = period_at(checks.usage_period(row), t)
        following = self.rows[index + 1] if index + 1 < len(self.rows) else None
        if following is not None and row.active_to is not None and t < row.active_to \
                and (end is None or row.active_to < end) and checks.continues_counter(row, following):
            return self._find(index + 1, row.active_to)  # the row taking over judges the whole period
        cut = row.active_to if end is None or (row.active_to is not None and row.active_to < end) else end
        previous = self.rows[index - 1] if index > 0 else None
        continued = previous is not None and start < row.active_from and checks.continues_counter(previous, row)
        begins = start if continued or row.active_from <= start else row.active_from
        # A usage reset that ends the row makes its end a period boundary (carrying as it said).
        reset = following is not None and cut == row.active_to and reset_between(row, following)
        carries_out = following.reset_overage == CARRY if reset and following else _carries(row)
        return _Segment(row, start, cut, reset or (end is not None and cut == end), begins, carries_out)


@dataclass(frozen=True)
class _Granted:
    """A grant as stored: its recurrence (None: it does not recur) and the usage kept at its
    start and end."""

    grant: Grant
    every: UsagePeriod | None
    usage_at_start: int | None
    usage_at_end: int | None

    def live_from(self, at: datetime) -> datetime:
        """When what the grant holds at `at` (or first holds after it) began to count."""
        if self.every is None:
            return self.grant.effective_at
        return recurring.live_from(self.grant, self.every, at)


def _marks_within(granted: _Granted, after: datetime, until: datetime) -> bool:
    """Whether the grant, or one of its instances, started or ended in (after, until]."""
    end = ends_at(granted.grant)
    if end is not None and after < end <= until or after < granted.grant.effective_at <= until:
        return True
    if granted.every is None:
        return False
    upcoming = recurring.next_start(granted.grant, granted.every, after)
    return upcoming is not None and upcoming <= until


async def _granted(session: AsyncSession, row: CustomerEntitlement, at: datetime) -> list[_Granted]:
    """The customer's grants on the row's feature that are effective by `at`."""
    found = await session.scalars(
        select(GrantRecord).where(
            GrantRecord.tenant_id == row.tenant_id,
            GrantRecord.customer_id == row.customer_id,
            GrantRecord.feature_id == row.feature_id,
            GrantRecord.effective_at <= at,
        )
    )
    return [_Granted(grant_of(r), recurrence_of(r), r.usage_at_start, r.usage_at_end) for r in found]


async def _instances(
    session: AsyncSession, row: CustomerEntitlement, granted: Sequence[_Granted], since: datetime, at: datetime
) -> tuple[list[Grant], _Kept]:
    """The grants to replay from `since` to `at` (a recurring one as its instances live in
    that span), and the usage kept at each one's start and end."""
    recurs = [g for g in granted if g.every is not None]
    kept = await queries.usage_at_recurrences(
        session, row.tenant_id, [g.grant.id for g in recurs], after=to_micros(since), until=to_micros(at)
    ) if recurs else {}
    grants: list[Grant] = []
    at_starts: dict[str, int | None] = {}
    at_ends: dict[str, int | None] = {}
    for g in granted:
        if g.every is None:
            grants.append(g.grant)
            at_starts[g.grant.id], at_ends[g.grant.id] = g.usage_at_start, g.usage_at_end
            continue
        for instance in recurring.instances(g.grant, g.every, after=since, until=at):
            grants.append(instance)
            # An instance starts where the one before it ended: at a kept start-over.
            first = instance.effective_at == g.grant.effective_at
            at_starts[instance.id] = g.usage_at_start if first else kept.get(
                (g.grant.id, to_micros(instance.effective_at)))
            ends_with_grant = ends_at(instance) == ends_at(g.grant)
            at_ends[instance.id] = g.usage_at_end if ends_with_grant else kept.get(
                (g.grant.id, to_micros(ends_at(instance) or at)))
    return grants, _Kept(at_starts, at_ends)


async def _rows(
    session: AsyncSession, row: CustomerEntitlement, since: datetime, at: datetime
) -> list[CustomerEntitlement]:
    """The customer's metered rows on the feature in force at some instant of [since, at]."""
    if row.active_from <= since:
        return [row]
    found = await session.scalars(
        select(CustomerEntitlement)
        .where(
            CustomerEntitlement.tenant_id == row.tenant_id,
            CustomerEntitlement.customer_id == row.customer_id,
            CustomerEntitlement.feature_id == row.feature_id,
            CustomerEntitlement.kind == "metered",
            CustomerEntitlement.active_from <= at,
            or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > since),
        )
        .order_by(CustomerEntitlement.active_from)
    )
    return [r for r in found if r.id != row.id and r.active_from < row.active_from] + [row]


def _carries(row: CustomerEntitlement) -> bool:
    return row.overage_at_reset == CARRY and checks.usage_period(row).interval is not Interval.NONE


def carries_into(row: CustomerEntitlement, period_start: datetime) -> bool:
    """Whether overage is carried into the row's period starting at `period_start`: at the
    row's own resets by its policy; into its first period only when a usage reset that carried
    started the row."""
    if period_start > row.active_from:
        return _carries(row)
    return row.reset_overage == CARRY


def may_carry(row: CustomerEntitlement) -> bool:
    """Whether overage may be carried into some period of the row (carries_into)."""
    return row.overage_at_reset == CARRY or row.reset_overage == CARRY


def reset_between(old: CustomerEntitlement, new: CustomerEntitlement) -> bool:
    """Whether a usage reset ended row `old` and started row `new` (its successor)."""
    return (new.reset_overage is not None and old.id != new.id
            and old.active_to is not None and old.active_to == new.active_from)


def soft_limit(row: CustomerEntitlement) -> Decimal:
    """The row's own soft limit (its included units unless it sets one), before grants."""
    included = row.included or ZERO
    return included if row.soft_limit is None else row.soft_limit
