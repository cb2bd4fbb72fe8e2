"""Real-time checks: may this customer use this feature now, and if asked, consume it.

A check reads the customer's live entitlement and, for metered ones, the one counter row of
the current usage period; the pure engine decides. Consuming does not trust that decision
alone: the increment is one conditional statement, so the database has the last word on the
hard limit under any concurrency (docs/entitlement-counters.md). Every deny is recorded.

With an idempotency key the first answer is stored in the same transaction as the increment;
a retry with the same request gets that answer back and consumes nothing, the same key with
another request is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.db import delete_oldest
from allotment.entitlements import (
    features,
    grant_ends,
    notices,
    queries,
    reservations,
    resolve,
    standing,
)
from allotment.entitlements.engine import (
    ONE,
    ZERO,
    BooleanEntitlement,
    Decision,
    Grant,
    Kind,
    MeteredEntitlement,
    Reason,
    StaticEntitlement,
    Verdict,
    decide,
)
from allotment.entitlements.models import Consumption, CustomerEntitlement, UsageDenial
from allotment.entitlements.periods import Interval, UsagePeriod, period_at
from allotment.errors import IdempotencyConflict, ValidationFailed
from allotment.types import new_id, to_micros

_NUMBERS = ("usage", "included", "soft_limit", "hard_limit", "balance", "overage")


class CheckRequest(NamedTuple):  # a tuple: built on every check (see engine.Decision)
    customer: str
    feature: str
    quantity: Decimal = ONE
    consume: bool = False
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """Equal for requests that mean the same (1 and 1.0 units are the same quantity)."""
        fields = [self.customer, self.feature, format(self.quantity.normalize(), "f"), self.consume]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class CheckResult(NamedTuple):  # a tuple: built on every check (see engine.Decision)
    """The decision and, for metered entitlements, the usage period it was made in.

    After a consume the numbers describe the counter with the consumption included.
    """

    decision: Decision
    period_start: datetime | None = None
    period_end: datetime | None = None
    replayed: bool = False
    decided_at: datetime | None = None  # of a replayed answer: when it was first given


async def check(
    session: AsyncSession, tenant_id: str, request: CheckRequest, *, at: datetime
) -> CheckResult:
    """Decide (and with `consume`, record) `request` at `at`; unknown names raise NotFound."""
    key = request.idempotency_key
    if key is None:
        return await _check(session, tenant_id, request, at)
    await queries.lock_key(session, tenant_id, key)
    stored = await session.get(Consumption, (tenant_id, key))
    if stored is not None:
        if stored.fingerprint != request.fingerprint():
            raise IdempotencyConflict(f"idempotency_key '{key}' was already used for a different check")
        return decode(stored.response)._replace(replayed=True, decided_at=stored.created_at)
    result = await _check(session, tenant_id, request, at)
    session.add(Consumption(
        tenant_id=tenant_id, idempotency_key=key, fingerprint=request.fingerprint(),
        response=encode(result), created_at=at,
    ))
    await session.flush()
    return result


async def forget_answers(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Drop at most `limit` remembered answers of keyed checks given before `before`."""
    m = Consumption
    keys = (m.tenant_id, m.idempotency_key)
    return await delete_oldest(session, m, keys=keys, created=m.created_at, before=before, limit=limit)


async def _check(
    session: AsyncSession, tenant_id: str, request: CheckRequest, at: datetime
) -> CheckResult:
    found = await resolve.target(session, tenant_id, request.customer, request.feature, at)
    row = found.row
    if request.consume and row is not None:
        async def named_at(instant: datetime) -> CustomerEntitlement | None:
            return (await resolve.target(session, tenant_id, request.customer, request.feature, instant)).row

        row, at = await counting_row(session, row, named_at, at)
    if row is None:
        result = CheckResult(Decision(Verdict.DENY, Reason.NOT_ENTITLED))
    elif row.kind == Kind.METERED:
        result = await _metered(session, row, request, at)
    elif row.kind == Kind.BOOLEAN:
        result = CheckResult(decide(BooleanEntitlement(row.has_access), quantity=request.quantity, at=at))
    elif row.kind == Kind.STATIC:
        result = CheckResult(decide(StaticEntitlement(row.config or {}), quantity=request.quantity, at=at))
    else:
        raise ValidationFailed.on("feature", f"'{request.feature}' counts seats: activate seats instead")
    if result.decision.decision is Verdict.DENY:
        await record_denial(session, tenant_id, found.customer_id, found.feature_id, request, result, at,
                            entitlement_id=None if row is None else row.id)
    return result


async def record_denial(
    session: AsyncSession,
    tenant_id: str,
    customer_id: str,
    feature_id: str,
    request: CheckRequest,
    result: CheckResult,
    at: datetime,
    *,
    entitlement_id: str | None = None,
) -> None:
    """Record a deny (both check paths) and tell of it (entitlements/notices.py), with what open
    holds keep from the balance: an upsell must make room for them as well."""
    session.add(UsageDenial(
        id=new_id("den"), tenant_id=tenant_id, customer_id=customer_id, feature_id=feature_id,
        at=at, quantity=request.quantity, reason=str(result.decision.reason),
    ))
    await session.flush()
    reserved = 0
    if entitlement_id is not None and result.period_start is not None:
        _, reserved = await queries.read_counter(session, tenant_id, entitlement_id, to_micros(result.period_start))
    await notices.denied(
        session, tenant_id, customer_id=customer_id, feature_id=feature_id, entitlement_id=entitlement_id,
        decision=result.decision, quantity=request.quantity, consume=request.consume,
        period_start=result.period_start, period_end=result.period_end, at=at, reserved=units(reserved),
    )


async def live_entitlement(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, at: datetime, *, fresh: bool = False
) -> CustomerEntitlement | None:
    """The customer's entitlement row for the feature in force at `at` (rows never overlap);
    `fresh`: with its values as stored now, even when the session read it before."""
    found: CustomerEntitlement | None = await session.scalar(
        select(CustomerEntitlement).where(
            *in_force(tenant_id, customer_id, at), CustomerEntitlement.feature_id == feature_id
        ).execution_options(populate_existing=fresh)
    )
    return found


def in_force(tenant_id: str, customer_id: str, at: datetime) -> tuple[ColumnElement[bool], ...]:
    """Conditions selecting the customer's entitlement rows in force at `at`."""
    return (
        CustomerEntitlement.tenant_id == tenant_id,
        CustomerEntitlement.customer_id == customer_id,
        CustomerEntitlement.active_from <= at,
        or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > at),
    )


def usage_period(row: CustomerEntitlement) -> UsagePeriod:
    return _usage_period(row.usage_period or Interval.MONTH, row.usage_anchor or row.active_from, row.time_zone)


@lru_cache(maxsize=4096)
def _usage_period(interval: str, anchor: datetime, time_zone: str) -> UsagePeriod:
    """One value per distinct period, so that its boundaries are remembered (periods.boundary)."""
    return UsagePeriod(Interval(interval), anchor, ZoneInfo(time_zone))


async def counting_row(
    session: AsyncSession,
    row: CustomerEntitlement,
    find: Callable[[datetime], Awaitable[CustomerEntitlement | None]],
    at: datetime,
) -> tuple[CustomerEntitlement | None, datetime]:
    """The row that usage at `at` adds to, first `row`, held until the transaction ends
    (`queries.hold_rows`), and the instant to count it at; `find` reads the row in force at an
    instant again.

    A change that ended `row` meanwhile (a plan change, an override) copied its counter into
    the row that took over: usage must count on that one, at the change, even when `at` came
    just before it (the request was already on its way). A row ended on a schedule keeps its
    usage, as its successor counts from its own start (`continues_counter`).
    """
    current: CustomerEntitlement | None = row
    while current is not None:
        ends = current.active_to
        if not await queries.hold_rows(session, {current.id: ends}):
            current = await find(at)  # changed since it was read: read again
            continue
        if ends is None:
            break
        after = await find(ends)
        if after is None or not continues_counter(current, after):
            break
        current, at = after, ends
    return current, at


def continues_counter(old: CustomerEntitlement, new: CustomerEntitlement) -> bool:
    """Whether metered row `new` took over from `old` mid-period, in the same usage period:
    its counter started with the period's usage (provisioning), so the period is judged as
    one, with `new`'s values from its start (an override, a plan change now). A row that a usage
    reset started never does: the reset starts a new period, even on the same grid. Nor does a
    row scheduled to start later (a change at the end of a billing period that falls inside a
    usage period): its counter could only be copied when it was made, and usage until it starts
    counts on the row in force, so it counts from its own start."""
    if old.active_to is None or old.active_to != new.active_from or old.id == new.id or new.reset_overage:
        return False
    if new.created_at < new.active_from:
        return False
    at = new.active_from
    start = period_at(usage_period(old), at)[0]
    return start < at and period_at(usage_period(new), at)[0] == start


def metered_entitlement(row: CustomerEntitlement) -> MeteredEntitlement:
    return MeteredEntitlement(row.included or ZERO, row.soft_limit, row.hard_limit)


def counter_key(row: CustomerEntitlement, period_start: datetime) -> tuple[str, str, int]:
    """The primary key of the row's counter in the period starting at `period_start`."""
    return (row.tenant_id, row.id, to_micros(period_start))


@dataclass(frozen=True)
class Counted:
    """A metered entitlement's counter in the period containing some instant, as read."""

    used: Decimal
    reserved: Decimal
    period_start: datetime
    period_end: datetime | None
    grants: tuple[Grant, ...] = ()  # with their amounts for this period
    carried: Decimal = ZERO  # overage carried in from the previous period, part of `used`


async def read_usage(session: AsyncSession, row: CustomerEntitlement, at: datetime) -> Counted:
    """What the live counter of a metered `row` holds for the period containing `at` (no writes).

    Overage still to be carried into the period is counted as if it had been.
    """
    found = await standing.standing(session, row, at)
    start = found.period_start
    used, reserved, fixed = await queries.counter_state(session, *counter_key(row, start)) or (0, 0, None)
    if reserved:  # holds that expired but were not given back yet hold nothing
        reserved -= await queries.expired_holds(session, *counter_key(row, start), at)
    carried = (fixed or 0) + (found.carry or 0)  # at most one of them: a carry is fixed once
    return Counted(units(used + (found.carry or 0)), units(reserved), start, found.period_end, found.grants,
                   carried=units(carried))


async def standing_now(
    session: AsyncSession, row: CustomerEntitlement, at: datetime
) -> standing.Standing:
    """The row's grants and period at `at`, with any overage carried into the period fixed."""
    found = await standing.standing(session, row, at)
    if found.carry is not None:
        await queries.fix_carry(session, *counter_key(row, found.period_start), found.carry)
    return found


async def _metered(
    session: AsyncSession, row: CustomerEntitlement, request: CheckRequest, at: datetime
) -> CheckResult:
    await reservations.sweep(session, row, at)  # expired holds go back before the counter is read
    ent = metered_entitlement(row)
    found = await standing_now(session, row, at)
    start, end = found.period_start, found.period_end
    counter = counter_key(row, start)
    q = request.quantity

    def judged(used: int, reserved: int, *, less: Decimal = ZERO) -> Decision:
        return decide(
            ent, usage=units(used) - less, reserved=units(reserved), grants=found.grants, quantity=q, at=at
        )

    if not request.consume:
        return CheckResult(judged(*await queries.read_counter(session, *counter)), start, end)
    if found.keeps_usage(at):
        await grant_ends.record(session, row, start, at, recurs=found.recurs)
    # Live grants raise the hard limit the database enforces, not only the one judged here.
    counted = await queries.consume(session, *counter, millionths(q), found.hard_limit(row, at))
    if counted is None:  # the database refused: the hard limit would be crossed
        used, reserved = await queries.read_counter(session, *counter)
        denied = judged(used, reserved)._replace(decision=Verdict.DENY, reason=refusal(used, reserved, q))
        return CheckResult(denied, start, end)
    # The verdict is what the state just before this increment called for; the numbers
    # are the state just after it.
    used, reserved, carried = counted
    before, after = judged(used, reserved, less=q), judged(used, reserved)
    where = notices.Where(row.tenant_id, row.id, row.customer_id, row.feature_id, start, end)
    await notices.usage_moved(session, where, before=units(used) - q, after=after, at=at, opening=units(carried))
    return CheckResult(after._replace(decision=before.decision, reason=before.reason), start, end)


def refusal(used: int, reserved: int, quantity: Decimal) -> Reason:
    """Why the database refused to add `quantity` to a counter at (`used`, `reserved`)."""
    full = used + reserved + millionths(quantity) > queries.MAX_BIGINT
    return Reason.COUNTER_FULL if full else Reason.HARD_LIMIT


def millionths(value: Decimal) -> int:
    """Exact for every quantity the API accepts (at most six decimals)."""
    return int(value * queries.MILLION)


def units(value: int) -> Decimal:
    return Decimal(value) / queries.MILLION


# --- stored answers ---------------------------------------------------------------------------


def encode(result: CheckResult) -> bytes:
    d = result.decision
    payload: dict[str, Any] = {
        "decision": str(d.decision), "reason": str(d.reason), "config": d.config,
        "period_start": _iso(result.period_start), "period_end": _iso(result.period_end),
    }
    for name in _NUMBERS:
        value = getattr(d, name)
        payload[name] = None if value is None else str(value)
    return json.dumps(payload).encode()


def decode(data: bytes) -> CheckResult:
    p = json.loads(data)
    numbers = {n: None if p[n] is None else Decimal(p[n]) for n in _NUMBERS}
    decision = Decision(Verdict(p["decision"]), p["reason"], config=p["config"], **numbers)
    return CheckResult(decision, _parse(p["period_start"]), _parse(p["period_end"]))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --- denials ----------------------------------------------------------------------------------


async def list_denials(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str | None = None,
    feature: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after: str | None = None,
    limit: int = 50,
) -> list[UsageDenial]:
    """Recorded denials in [start, end), oldest first (ids sort by time); unknown filters raise
    NotFound."""
    stmt = select(UsageDenial).where(UsageDenial.tenant_id == tenant_id)
    if start is not None:
        stmt = stmt.where(UsageDenial.at >= start)
    if end is not None:
        stmt = stmt.where(UsageDenial.at < end)
    if customer is not None:
        customer_id = (await customers.find(session, tenant_id, customer)).id
        stmt = stmt.where(UsageDenial.customer_id == customer_id)
    if feature is not None:
        stmt = stmt.where(UsageDenial.feature_id == (await features.get(session, tenant_id, feature, archived=True)).id)
    if after is not None:
        stmt = stmt.where(UsageDenial.id > after)
    return list(await session.scalars(stmt.order_by(UsageDenial.id).limit(limit)))
