"""Reservations: hold units of a metered entitlement now, settle the actual amount later.

A charger starting a session, or a switch setting up a call, reserves what it may need; the
hold sits in the `reserved` column of the entitlement's live counter row, so every other
check, consume and reservation counts it as spent. Taking the hold is one conditional
statement on that row (`used + reserved + q <= hard`), decided by the database, so two
reservations can never hold the same unit under any concurrency. Commit moves the hold out
of `reserved` and the actual amount into `used` in one statement (conditional on the hard
limit only when the actual amount is larger than the hold); release gives the hold back.

A reservation that is neither committed nor released by `expires_at` expires: `sweep` ends
every expired open reservation of an entitlement and gives its hold back. It runs at the
start of every reservation operation and of every metered check, before the counter is read,
and from the worker's periodic scan for holds nobody touches again (hold_expiry.py).
Expired rows another transaction has locked are skipped (that transaction is working on that
reservation); each hold is given back by exactly one transaction. Locks are taken in the
order: the reservation operated on, expired reservations (never waiting), the counter row.

Functions take the session first and `at`, and never commit.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.entitlements import check as checks
from allotment.entitlements import features, grant_ends, notices, queries, standing
from allotment.entitlements.engine import ZERO, Decision, Grant, Kind, Reason, Verdict, decide
from allotment.entitlements.models import CustomerEntitlement, Reservation, UsageDenial
from allotment.entitlements.periods import period_at
from allotment.errors import Conflict, IdempotencyConflict, NotFound, ValidationFailed
from allotment.types import as_utc, from_micros, new_id

OPEN = "open"
COMMITTED = "committed"
RELEASED = "released"
EXPIRED = "expired"


@dataclass(frozen=True)
class ReservationRequest:
    customer: str
    feature: str
    quantity: Decimal
    ttl_seconds: int
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """Equal for requests that mean the same (1 and 1.0 units are the same quantity)."""
        fields = [self.customer, self.feature, format(self.quantity.normalize(), "f"), self.ttl_seconds]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass(frozen=True)
class Held:
    """The answer to a reservation request.

    `reservation` is None when it was denied. The decision's numbers describe the counter
    after the hold (usage, balance...); `reserved` is everything held in it.
    """

    decision: Decision
    reservation: Reservation | None
    reserved: Decimal
    period_start: datetime | None = None
    period_end: datetime | None = None
    replayed: bool = False


@dataclass(frozen=True)
class Settled:
    """A reservation after commit or release, and where the counter it was held in stands
    after (`standing`: usage, effective limits and balance, as a check would show them)."""

    reservation: Reservation
    usage: Decimal
    reserved: Decimal
    standing: Decision


def conflict(code: str, detail: str) -> Conflict:
    err = Conflict(detail)
    err.code = code
    return err


async def sweep(session: AsyncSession, row: CustomerEntitlement, at: datetime) -> int:
    """Expire the open reservations of `row` whose time ran out by `at`; give their holds back."""
    expired = and_(
        Reservation.tenant_id == row.tenant_id,
        Reservation.entitlement_id == row.id,
        Reservation.status == OPEN,
        Reservation.expires_at <= at,
    )
    mine = select(Reservation.id).where(expired).with_for_update(skip_locked=True)
    gone = (
        await session.execute(
            update(Reservation)
            .where(expired, Reservation.id.in_(mine))
            .values(status=EXPIRED, closed_at=Reservation.expires_at)
            .returning(Reservation.period_start, Reservation.quantity, Reservation.id, Reservation.expires_at)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if gone:
        holds: dict[int, int] = defaultdict(int)
        for period_start, quantity, _, _ in gone:
            holds[period_start] += checks.millionths(quantity)
        await queries.unreserve(session, row.tenant_id, row.id, list(holds.items()))
        await notices.reservations_expired(session, row, [(i, q, e) for _, q, i, e in gone], at)
    return len(gone)


async def create(
    session: AsyncSession, tenant_id: str, request: ReservationRequest, *, at: datetime
) -> Held:
    """Hold `request.quantity` until `at + ttl_seconds`, unless that would cross the hard limit.

    With an idempotency key, a retry of the same request returns the first reservation and
    holds nothing more; the same key with another request is a 409.
    """
    at = as_utc(at)
    if request.ttl_seconds < 1:
        raise ValidationFailed.on("ttl_seconds", "must be at least 1")
    if request.quantity <= ZERO:
        raise ValidationFailed.on("quantity", "must be greater than 0")
    key = request.idempotency_key
    if key is not None:
        await queries.lock_reservation_key(session, tenant_id, key)
        first = await session.scalar(
            select(Reservation).where(Reservation.tenant_id == tenant_id, Reservation.idempotency_key == key)
        )
        if first is not None:
            if first.fingerprint != request.fingerprint():
                raise IdempotencyConflict(f"idempotency_key '{key}' was already used for a different reservation")
            return await _replay(session, first, at)
    customer = await customers.find(session, tenant_id, request.customer)
    feature = await features.held_by(session, tenant_id, request.feature, customer_id=customer.id, at=at)
    row = await checks.live_entitlement(session, tenant_id, customer.id, feature.id, at)
    if row is not None and row.kind == Kind.METERED:
        async def in_force(instant: datetime) -> CustomerEntitlement | None:
            return await checks.live_entitlement(session, tenant_id, customer.id, feature.id, instant, fresh=True)

        row, at = await checks.counting_row(session, row, in_force, at)
    if row is None:
        decision = Decision(Verdict.DENY, Reason.NOT_ENTITLED)
        await _record_denial(session, tenant_id, customer.id, feature.id, request.quantity, decision, at)
        return Held(decision, None, ZERO)
    if row.kind != Kind.METERED:
        raise ValidationFailed.on(
            "feature", f"'{request.feature}' is a {row.kind} entitlement: only metered usage can be reserved"
        )
    await sweep(session, row, at)
    found = await checks.standing_now(session, row, at)
    start, end = found.period_start, found.period_end
    counter = checks.counter_key(row, start)
    q = request.quantity
    held = await queries.reserve(session, *counter, checks.millionths(q), found.hard_limit(row, at))
    if held is None:  # the database refused: the hold would cross the hard limit
        used, reserved = await queries.read_counter(session, *counter)
        now = _judge(row, found.grants, used, reserved, q, at)
        decision = now._replace(decision=Verdict.DENY, reason=checks.refusal(used, reserved, q))
        await _record_denial(session, tenant_id, customer.id, feature.id, q, decision, at, row=row, period=(start, end),
                             reserved=checks.units(reserved))
        return Held(decision, None, checks.units(reserved), start, end)
    reservation = Reservation(
        id=new_id("res"), tenant_id=tenant_id, entitlement_id=row.id, customer_id=customer.id,
        feature_id=feature.id, period_start=counter[2], quantity=q, status=OPEN,
        expires_at=at + timedelta(seconds=request.ttl_seconds), committed_quantity=None,
        idempotency_key=key, fingerprint=request.fingerprint(), created_at=at, closed_at=None,
    )
    session.add(reservation)
    await session.flush()
    used, reserved = held
    return Held(_standing(row, found.grants, used, reserved, q, at), reservation, checks.units(reserved),
                start, end)


async def get(session: AsyncSession, tenant_id: str, reservation_id: str) -> Reservation:
    found = await session.get(Reservation, reservation_id)
    if found is None or found.tenant_id != tenant_id:
        raise NotFound("reservation", reservation_id)
    return found


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str | None,
    feature: str | None,
    status: str | None,
    after: str | None,
    limit: int,
    at: datetime,
) -> list[Reservation]:
    """Reservations, oldest first (ids sort by time); filters by customer and feature (key or
    id, unknown ones a 404) and by status as reads show it: one open past its expiry is expired."""
    stmt = select(Reservation).where(Reservation.tenant_id == tenant_id)
    customer_id = None if customer is None else (await customers.find(session, tenant_id, customer)).id
    if customer_id is not None:
        stmt = stmt.where(Reservation.customer_id == customer_id)
    if feature is not None:
        named = (await features.get(session, tenant_id, feature, archived=True) if customer_id is None
                 else await features.held_by(session, tenant_id, feature, customer_id=customer_id, at=at))
        stmt = stmt.where(Reservation.feature_id == named.id)
    if status == OPEN:
        stmt = stmt.where(Reservation.status == OPEN, Reservation.expires_at > at)
    elif status == EXPIRED:
        stmt = stmt.where(or_(Reservation.status == EXPIRED,
                              and_(Reservation.status == OPEN, Reservation.expires_at <= at)))
    elif status is not None:
        stmt = stmt.where(Reservation.status == status)
    if after is not None:
        stmt = stmt.where(Reservation.id > after)
    return list(await session.scalars(stmt.order_by(Reservation.id).limit(limit)))


async def commit(
    session: AsyncSession, tenant_id: str, reservation_id: str, quantity: Decimal, *, at: datetime
) -> Settled:
    """Settle an open reservation at the actual `quantity`: the hold goes, the usage is recorded.

    More than was held is allowed when the extra fits under the hard limit; otherwise 409
    `hard_limit`, and the hold stays until it is released or expires.
    """
    if quantity < ZERO:
        raise ValidationFailed.on("quantity", "must not be negative")
    reservation, row = await _open(session, tenant_id, reservation_id, at, "commit")
    held, actual = checks.millionths(reservation.quantity), checks.millionths(quantity)
    start = from_micros(reservation.period_start)
    _, end = period_at(checks.usage_period(row), start)
    found = await standing.standing(session, row, _within(start, end, at))
    hard = found.hard_limit(row, at)
    if actual and found.keeps_usage(at):
        await grant_ends.record(session, row, start, at, recurs=found.recurs)
    counted = await queries.settle(session, tenant_id, row.id, reservation.period_start, held, actual, hard)
    if counted is None:
        raise conflict(
            "hard_limit",
            f"committing {quantity} of reservation '{reservation_id}' (holding {reservation.quantity}) would "
            f"cross the hard limit of {_number(checks.units(hard) if hard is not None else row.hard_limit)}"
            " (with what grants add): denied; the hold stays until released or expired",
        )
    used, reserved, carried = counted
    after = notices.standing_of(
        checks.metered_entitlement(row), checks.units(used), checks.units(reserved), found.grants, at
    )
    where = notices.Where(tenant_id, row.id, row.customer_id, row.feature_id, start, end)
    await notices.usage_moved(session, where, before=checks.units(used) - quantity, after=after, at=at,
                              opening=checks.units(carried))
    return await _close(session, reservation, COMMITTED, quantity, (used, reserved), after, at)


def _number(value: Decimal | None) -> str:
    return "none" if value is None else format(value.normalize(), "f")


async def release(session: AsyncSession, tenant_id: str, reservation_id: str, *, at: datetime) -> Settled:
    """Give the hold of an open reservation back, recording no usage."""
    reservation, row = await _open(session, tenant_id, reservation_id, at, "release")
    counted = await queries.settle(
        session, tenant_id, row.id, reservation.period_start, checks.millionths(reservation.quantity), 0, None
    )
    used, reserved, _ = counted or (0, 0, 0)
    start = from_micros(reservation.period_start)
    found = await standing.standing(session, row, _within(start, period_at(checks.usage_period(row), start)[1], at))
    after = notices.standing_of(
        checks.metered_entitlement(row), checks.units(used), checks.units(reserved), found.grants, at
    )
    return await _close(session, reservation, RELEASED, None, (used, reserved), after, at)


async def hand_over(
    session: AsyncSession, tenant_id: str, from_id: str, to_id: str, period_start: int
) -> None:
    """Open holds of row `from_id` in the period move to `to_id`, which took over that period's
    counter (checks.continues_counter): they keep counting against the values in force, and
    commit or release on them."""
    held = list(await session.scalars(
        select(Reservation)
        .where(Reservation.tenant_id == tenant_id, Reservation.entitlement_id == from_id,
               Reservation.status == OPEN, Reservation.period_start == period_start)
        .with_for_update()
    ))
    if not held:
        return
    for reservation in held:
        reservation.entitlement_id = to_id
    await session.flush()
    moved = sum(checks.millionths(r.quantity) for r in held)
    await queries.move_held(session, tenant_id, from_id, to_id, period_start, moved)


# --- helpers ----------------------------------------------------------------------------------


async def _open(
    session: AsyncSession, tenant_id: str, reservation_id: str, at: datetime, action: str
) -> tuple[Reservation, CustomerEntitlement]:
    """The reservation, locked, if still open at `at` (else 409), after sweeping its entitlement.

    Its own expiry is judged before the sweep, so the sweep never touches it.
    """
    at = as_utc(at)
    reservation = await session.scalar(
        select(Reservation)
        .where(Reservation.id == reservation_id, Reservation.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if reservation is None:
        raise NotFound("reservation", reservation_id)
    when = (reservation.closed_at or at).isoformat()
    if reservation.status == COMMITTED:
        raise conflict("reservation_committed",
                       f"cannot {action} reservation '{reservation_id}': it was already committed at {when}")
    if reservation.status == RELEASED:
        raise conflict("reservation_released",
                       f"cannot {action} reservation '{reservation_id}': it was already released at {when}")
    if reservation.status == EXPIRED or reservation.expires_at <= at:
        raise conflict("reservation_expired",
                       f"cannot {action} reservation '{reservation_id}': it expired at "
                       f"{reservation.expires_at.isoformat()} and its hold was given back")
    row = await session.get(CustomerEntitlement, reservation.entitlement_id)
    assert row is not None  # a foreign key
    await sweep(session, row, at)
    return reservation, row


async def _close(
    session: AsyncSession,
    reservation: Reservation,
    status: str,
    committed: Decimal | None,
    counted: tuple[int, int],
    after: Decision,
    at: datetime,
) -> Settled:
    reservation.status = status
    reservation.committed_quantity = committed
    reservation.closed_at = at
    await session.flush()
    used, reserved = counted
    return Settled(reservation, checks.units(used), checks.units(reserved), after)


async def _replay(session: AsyncSession, first: Reservation, at: datetime) -> Held:
    """The answer to a retry: the first reservation, judged on the counter as it is now."""
    row = await session.get(CustomerEntitlement, first.entitlement_id)
    assert row is not None  # a foreign key
    used, reserved = await queries.read_counter(session, first.tenant_id, row.id, first.period_start)
    start = from_micros(first.period_start)
    _, end = period_at(checks.usage_period(row), start)
    found = await standing.standing(session, row, _within(start, end, at))
    decision = _standing(row, found.grants, used, reserved, first.quantity, at)
    return Held(decision, first, checks.units(reserved), start, end, replayed=True)


def _within(start: datetime, end: datetime | None, at: datetime) -> datetime:
    """`at`, or the last instant of the period [start, end) when `at` is past it."""
    return at if end is None or at < end else max(start, end - timedelta(microseconds=1))


def _judge(
    row: CustomerEntitlement, grants: Sequence[Grant], used: int, reserved: int, quantity: Decimal, at: datetime
) -> Decision:
    return decide(
        checks.metered_entitlement(row), usage=checks.units(used), reserved=checks.units(reserved),
        grants=grants, quantity=quantity, at=at,
    )


def _standing(
    row: CustomerEntitlement, grants: Sequence[Grant], used: int, reserved: int, quantity: Decimal, at: datetime
) -> Decision:
    """The verdict the counter before a hold of `quantity` called for; the numbers after it."""
    before = decide(
        checks.metered_entitlement(row), usage=checks.units(used),
        reserved=max(ZERO, checks.units(reserved) - quantity), grants=grants, quantity=quantity, at=at,
    )
    after = _judge(row, grants, used, reserved, quantity, at)
    return after._replace(decision=before.decision, reason=before.reason)


async def _record_denial(
    session: AsyncSession,
    tenant_id: str,
    customer_id: str,
    feature_id: str,
    quantity: Decimal,
    decision: Decision,
    at: datetime,
    *,
    row: CustomerEntitlement | None = None,
    period: tuple[datetime | None, datetime | None] = (None, None),
    reserved: Decimal = ZERO,
) -> None:
    """Record a refused hold and tell of it, with the entitlement and period it was refused in
    when there is one (as a refused check tells it: the payload names the period, and the
    first refusal of the hour may suggest a top-up that covers the holds still open too)."""
    session.add(UsageDenial(
        id=new_id("den"), tenant_id=tenant_id, customer_id=customer_id, feature_id=feature_id,
        at=at, quantity=quantity, reason=str(decision.reason),
    ))
    await session.flush()
    await notices.denied(
        session, tenant_id, customer_id=customer_id, feature_id=feature_id,
        entitlement_id=None if row is None else row.id, decision=decision, quantity=quantity, consume=False,
        period_start=period[0], period_end=period[1], at=at, reserved=reserved,
    )


async def record_refused_commit(
    session: AsyncSession, tenant_id: str, reservation_id: str, quantity: Decimal, *, at: datetime
) -> None:
    """Record a commit refused at the hard limit as a denial of `quantity`.

    The refusal itself is an error that rolls its transaction back, so this runs in one of
    its own: a refused commit is as visible to operators and customers as a refused check.
    """
    reservation = await get(session, tenant_id, reservation_id)
    session.add(UsageDenial(
        id=new_id("den"), tenant_id=tenant_id, customer_id=reservation.customer_id,
        feature_id=reservation.feature_id, at=at, quantity=quantity, reason=str(Reason.HARD_LIMIT),
    ))
    await session.flush()
