"""Seats: a gauge of concurrently active items (users, devices, licences) per entitlement.

An item holds a seat through a lease (`seat_leases`), optionally with an expiry that
heartbeats push back. The number of live leases is kept in the entitlement's counter row of
period 0 in `entitlement_usage` (`used`, in millionths like every other counter), so that a
seat is taken by the same kind of single conditional statement that consumes metered usage:
the database refuses it once active + 1 would pass the hard limit, under any concurrency.

Every operation first takes over the live leases of the rows a plan change replaced (once
per row: `queries.adopt_seats`), then ends the leases that expired by `at` (released_at = expires_at) and
gives their seats back. Operations on one item are serialised by a transaction-scoped lock
on the item; locks are always taken in the order item, its lease row, expired lease rows
(skipping rows other transactions hold), gauge row, so concurrent operations cannot deadlock.

Functions take the session first and `at`, and never commit. `holders` only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.entitlements import features, notices, queries
from allotment.entitlements.check import live_entitlement, millionths, units
from allotment.entitlements.engine import (
    ONE,
    ZERO,
    Decision,
    Kind,
    Reason,
    Verdict,
    decide_seats,
    pays_as_it_goes,
)
from allotment.entitlements.models import CustomerEntitlement, SeatLease, SeatSpan, UsageDenial
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import as_utc, new_id

SEAT = queries.MILLION  # one seat in the gauge's millionths


@dataclass(frozen=True)
class SeatResult:
    """The decision and the gauge after the operation.

    For activate the decision is the one the activation got (an idempotent re-activation is
    judged by the position of the seat the item already holds); for heartbeat and release it
    describes where the last active seat stands.
    """

    decision: Decision
    active: int
    item: str
    expires_at: datetime | None


@dataclass(frozen=True)
class SeatHolder:
    """An item holding a seat: its live lease as stored, and whether its seat is overdraft."""

    item: str
    activated_at: datetime
    expires_at: datetime | None  # None: the lease never expires
    lease_ttl_seconds: int | None  # what a heartbeat without a length renews it by
    in_overdraft: bool


@dataclass(frozen=True)
class _Lease:
    activated_at: datetime
    expires_at: datetime | None
    released_at: datetime | None
    ttl: int | None

    def live(self, at: datetime) -> bool:
        return self.released_at is None and (self.expires_at is None or self.expires_at > at)


async def activate(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    feature_key: str,
    item: str,
    *,
    lease_ttl_seconds: int | None = None,
    at: datetime,
) -> SeatResult:
    """Give `item` a seat (idempotent while it holds one); beyond the hard limit: deny."""
    at = as_utc(at)
    customer_id, feature_id, row = await _lookup(session, tenant_id, customer_key, feature_key, at)
    if row is None:
        decision = Decision(Verdict.DENY, Reason.NOT_ENTITLED)
        await _record_denial(session, tenant_id, customer_id, feature_id, item, decision, at)
        return SeatResult(decision, 0, item, None)
    _require_seats(row, feature_key)
    ttl = _ttl(row, lease_ttl_seconds)
    expires_at = _expiry(ttl, at)
    await queries.adopt_seats(session, row, at=at)
    await queries.lock_seat_item(session, tenant_id, row.id, item)
    lease = await _lease(session, row, item)
    await _free_expired(session, row, at)
    if lease is not None and lease.live(at):
        await session.execute(
            update(SeatLease).where(*_key(row, item)).values(expires_at=expires_at, lease_ttl_seconds=ttl)
        )
        active = await _active(session, row)
        return SeatResult(await _held(session, row, item, lease, active, at), active, item, expires_at)

    hard = None if row.hard_limit is None else millionths(row.hard_limit)
    taken = await queries.consume(session, tenant_id, row.id, queries.SEAT_PERIOD, SEAT, hard)
    if taken is None:  # the database refused: one more seat would pass the hard limit
        active = await _active(session, row)
        decision = _judge(row, active)._replace(decision=Verdict.DENY, reason=Reason.HARD_LIMIT)
        await _record_denial(session, tenant_id, customer_id, feature_id, item, decision, at, entitlement_id=row.id)
        return SeatResult(decision, active, item, None)
    values = {"activated_at": at, "expires_at": expires_at, "released_at": None, "lease_ttl_seconds": ttl}
    if lease is None:
        await session.execute(
            insert(SeatLease).values(tenant_id=tenant_id, entitlement_id=row.id, item=item, **values)
        )
    else:
        await _keep_span(session, row, item)
        await session.execute(update(SeatLease).where(*_key(row, item)).values(**values))
    active = _seats(taken[0])
    # The verdict is what the gauge before this seat called for; the numbers are after it.
    decision = _standing(row, active)
    await notices.seat_taken(session, row, active=active, item=item, decision=decision, at=at)
    return SeatResult(decision, active, item, expires_at)


async def heartbeat(
    session: AsyncSession,
    tenant_id: str,
    customer_key: str,
    feature_key: str,
    item: str,
    *,
    lease_ttl_seconds: int | None = None,
    at: datetime,
) -> SeatResult:
    """Extend the live lease of `item` to at + TTL: the one given, else the one the lease was
    taken or last renewed with (a lease without expiry keeps none).

    An item never activated is a 404 (`seat_not_found`); one whose lease was released or
    expired is a 409: its seat is gone and it must be activated again.
    """
    at = as_utc(at)
    row = await _seats_entitlement(session, tenant_id, customer_key, feature_key, at)
    if lease_ttl_seconds is not None:
        _expiry(lease_ttl_seconds, at)  # a bad length is refused before anything is locked
    await queries.adopt_seats(session, row, at=at)
    await queries.lock_seat_item(session, tenant_id, row.id, item)
    lease = await _lease(session, row, item)
    await _free_expired(session, row, at)
    _require_live(lease, item, at, "heartbeat")
    assert lease is not None
    ttl = lease.ttl if lease_ttl_seconds is None else lease_ttl_seconds
    if ttl is None and lease.expires_at is not None:  # taken before leases kept their length
        ttl = row.lease_ttl_seconds
    expires_at = lease.expires_at if ttl is None else _expiry(ttl, at)  # no length: as it was
    await session.execute(
        update(SeatLease).where(*_key(row, item)).values(expires_at=expires_at, lease_ttl_seconds=ttl)
    )
    active = await _active(session, row)
    return SeatResult(await _held(session, row, item, lease, active, at), active, item, expires_at)


async def release(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, item: str, *, at: datetime
) -> SeatResult:
    """End the lease of `item` and free its seat.

    An item never activated is a 404 (`seat_not_found`); releasing a lease that was already
    released, or that expired (its seat was freed then), is a 409.
    """
    at = as_utc(at)
    row = await _seats_entitlement(session, tenant_id, customer_key, feature_key, at)
    await queries.adopt_seats(session, row, at=at)
    await queries.lock_seat_item(session, tenant_id, row.id, item)
    lease = await _lease(session, row, item)
    await _free_expired(session, row, at)
    _require_live(lease, item, at, "release")
    await session.execute(update(SeatLease).where(*_key(row, item)).values(released_at=at))
    active = _seats((await queries.free_seats(session, tenant_id, row.id, SEAT))[0])
    return SeatResult(_standing(row, active), active, item, None)


async def holders(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, *, at: datetime,
    limit: int, after: tuple[datetime, str] | None = None,
) -> list[SeatHolder]:
    """The items holding a seat at `at`, earliest seat first (then by item): `limit` of them
    after the (activated_at, item) `after`.

    The live leases exactly as `queries.active_seats` counts them, so the list and the gauge
    agree without any write: a lease past its expiry is left out whether or not a seat
    operation swept it yet, and the leases of rows a plan change replaced are in until the
    new row adopts them. The seats past the soft limit are the last ones taken: the holder
    ranked n-th is in overdraft when n > soft, the position activate judges a new seat by, so
    as many holders are flagged as the entitlement's overage counts.
    """
    at = as_utc(at)
    row = await _seats_entitlement(session, tenant_id, customer_key, feature_key, at)
    order = (SeatLease.activated_at, SeatLease.item)
    ranked = (
        select(SeatLease.item, SeatLease.activated_at, SeatLease.expires_at, SeatLease.lease_ttl_seconds,
               func.row_number().over(order_by=order).label("seat"))
        .where(queries.held_by(row), queries.live_lease(at))  # the same leases the gauge counts
        .subquery()
    )
    query = select(ranked).order_by(ranked.c.activated_at, ranked.c.item).limit(limit)
    if after is not None:
        since, item = after
        query = query.where(or_(ranked.c.activated_at > since,
                                and_(ranked.c.activated_at == since, ranked.c.item > item)))
    soft = row.soft_limit if row.soft_limit is not None else row.included or ZERO
    flagged = not pays_as_it_goes(row.included, row.soft_limit, row.hard_limit)
    return [
        SeatHolder(h.item, h.activated_at, h.expires_at, h.lease_ttl_seconds, flagged and h.seat > soft)
        for h in await session.execute(query)
    ]


# --- helpers ----------------------------------------------------------------------------------


async def _lookup(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, at: datetime
) -> tuple[str, str, CustomerEntitlement | None]:
    customer = await customers.find(session, tenant_id, customer_key)
    feature = await features.held_by(session, tenant_id, feature_key, customer_id=customer.id, at=at)
    return customer.id, feature.id, await live_entitlement(session, tenant_id, customer.id, feature.id, at)


async def _seats_entitlement(
    session: AsyncSession, tenant_id: str, customer_key: str, feature_key: str, at: datetime
) -> CustomerEntitlement:
    _, _, row = await _lookup(session, tenant_id, customer_key, feature_key, at)
    if row is None:
        raise NotFound("entitlement", feature_key)
    _require_seats(row, feature_key)
    return row


def _require_seats(row: CustomerEntitlement, feature_key: str) -> None:
    if row.kind != Kind.SEATS:
        raise ValidationFailed.on(
            "feature", f"'{feature_key}' is a {row.kind} entitlement, not seats: use /v1/check"
        )


def _ttl(row: CustomerEntitlement, lease_ttl_seconds: int | None) -> int | None:
    """The lease length asked for, else the entitlement's (None: no expiry)."""
    return row.lease_ttl_seconds if lease_ttl_seconds is None else lease_ttl_seconds


def _expiry(ttl: int | None, at: datetime) -> datetime | None:
    if ttl is None:
        return None
    if ttl < 1:
        raise ValidationFailed.on("lease_ttl_seconds", "must be at least 1")
    return at + timedelta(seconds=ttl)


def _key(row: CustomerEntitlement, item: str) -> tuple[ColumnElement[bool], ...]:
    return (
        SeatLease.tenant_id == row.tenant_id,
        SeatLease.entitlement_id == row.id,
        SeatLease.item == item,
    )


async def _lease(session: AsyncSession, row: CustomerEntitlement, item: str) -> _Lease | None:
    """The item's lease row, locked for this transaction (FOR UPDATE; a no-op on SQLite)."""
    found = (
        await session.execute(
            select(SeatLease.activated_at, SeatLease.expires_at, SeatLease.released_at, SeatLease.lease_ttl_seconds)
            .where(*_key(row, item))
            .with_for_update()
        )
    ).first()
    return None if found is None else _Lease(*found)


async def _keep_span(session: AsyncSession, row: CustomerEntitlement, item: str) -> None:
    """Before an ended lease row is reused: keep the span it covered (`seat_spans`).

    A span of no length adds nothing to any gauge and is not kept, so two kept spans of one
    item never start at the same instant (a later one starts no earlier than the last ended).
    """
    ended = func.coalesce(SeatLease.released_at, SeatLease.expires_at)
    await session.execute(
        insert(SeatSpan).from_select(
            ["tenant_id", "entitlement_id", "item", "activated_at", "ended_at"],
            select(SeatLease.tenant_id, SeatLease.entitlement_id, SeatLease.item, SeatLease.activated_at, ended)
            .where(*_key(row, item), ended > SeatLease.activated_at),
        )
    )


async def _free_expired(session: AsyncSession, row: CustomerEntitlement, at: datetime) -> int:
    """End every lease of the entitlement that expired by `at`; give their seats back.

    Rows another transaction has locked are skipped: that transaction holds them because it
    is working on that item, and frees the lease itself if it expired. Each lease is ended by
    exactly one transaction, so each expired seat is given back exactly once.
    """
    expired = and_(
        SeatLease.tenant_id == row.tenant_id,
        SeatLease.entitlement_id == row.id,
        SeatLease.released_at.is_(None),
        SeatLease.expires_at.is_not(None),
        SeatLease.expires_at <= at,
    )
    mine = select(SeatLease.item).where(expired).with_for_update(skip_locked=True)
    freed = (
        await session.execute(
            update(SeatLease)
            .where(expired, SeatLease.item.in_(mine))
            .values(released_at=SeatLease.expires_at)
            .returning(SeatLease.item)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if freed:
        await queries.free_seats(session, row.tenant_id, row.id, len(freed) * SEAT)
    return len(freed)


def _require_live(lease: _Lease | None, item: str, at: datetime, action: str) -> None:
    if lease is None:
        raise NotFound("seat", item)
    if lease.released_at is not None and (lease.expires_at is None or lease.released_at < lease.expires_at):
        raise Conflict(f"cannot {action} item '{item}': its seat was already released at "
                       f"{lease.released_at.isoformat()}; activate it again")
    if not lease.live(at):
        expired = lease.expires_at.isoformat() if lease.expires_at is not None else "?"
        raise Conflict(f"cannot {action} item '{item}': its lease expired at {expired} and the seat "
                       "was freed; activate it again")


async def _active(session: AsyncSession, row: CustomerEntitlement) -> int:
    used, _ = await queries.read_counter(session, row.tenant_id, row.id, queries.SEAT_PERIOD)
    return _seats(used)


def _seats(used: int) -> int:
    return int(units(used))


def _judge(row: CustomerEntitlement, active: int) -> Decision:
    """One more seat with `active` seats taken."""
    return decide_seats(
        units(active * SEAT), ONE, row.included or ZERO, row.soft_limit, row.hard_limit
    )


def _standing(row: CustomerEntitlement, active: int) -> Decision:
    """Where the `active`-th seat stands: allow within soft, overdraft up to hard.

    The numbers (usage, balance, overage) are those of the gauge holding `active` seats.
    """
    seat = _judge(row, max(active - 1, 0))
    now = _judge(row, active)
    return now._replace(decision=seat.decision, reason=seat.reason)


async def _held(
    session: AsyncSession, row: CustomerEntitlement, item: str, lease: _Lease, active: int, at: datetime
) -> Decision:
    """Where the seat `item` already holds stands, ranked as `holders` ranks it (earliest seat
    first): a renewal of a paid seat is not overdraft because later seats are. The numbers
    are the gauge's, `active` seats."""
    since = (lease.activated_at, item)
    rank = await session.scalar(
        select(func.count()).select_from(SeatLease).where(
            queries.held_by(row), queries.live_lease(at),
            or_(SeatLease.activated_at < since[0], and_(SeatLease.activated_at == since[0], SeatLease.item <= item)),
        )
    )
    seat = _judge(row, max(int(rank or 0) - 1, 0))
    return _judge(row, active)._replace(decision=seat.decision, reason=seat.reason)


async def _record_denial(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, item: str, decision: Decision,
    at: datetime,
    *,
    entitlement_id: str | None = None,
) -> None:
    session.add(UsageDenial(
        id=new_id("den"), tenant_id=tenant_id, customer_id=customer_id, feature_id=feature_id,
        at=at, quantity=ONE, reason=str(decision.reason), item=item,
    ))
    await session.flush()
    await notices.denied(
        session, tenant_id, customer_id=customer_id, feature_id=feature_id, entitlement_id=entitlement_id,
        decision=decision, quantity=ONE, consume=True, period_start=None, period_end=None, at=at, item=item,
    )
