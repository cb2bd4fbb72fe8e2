"""The worker's side of the outbox: fan out, claim, record. Each step is one short transaction
of its caller's; no transaction is open while a webhook is sent.

- **Fan out**: each new notification gets one delivery per enabled endpoint subscribed to
  its type, and per endpoint named by an enabled rule it matches (`rules.matches`), in
  emission order (one fan-out at a time). Pings and rule tests go to their addressees only.
- **Claim**: due deliveries get a lease (`locked_until`, `lease`); on PostgreSQL the rows
  are taken with `FOR UPDATE SKIP LOCKED`, so concurrent workers claim disjoint sets, and a
  leased row is skipped by everyone until the lease runs out. A delivery is due only when no
  earlier delivery to the same endpoint for the same customer is pending, so a customer's
  messages reach an endpoint in order, one at a time.
- **Record**: the attempt is logged; the delivery is done, retried later, or dead-lettered,
  but only by the holder of its lease (a worker that outlived its lease changes nothing).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import (
    Table,
    bindparam,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnClause

from allotment import codec
from allotment.db import UTCDateTime
from allotment.notifications import bodies, catalogue, queries, retries, rules, service
from allotment.notifications.models import (
    DEAD,
    DELIVERED,
    PENDING,
    Attempt,
    Delivery,
    Notification,
    NotificationRule,
    WebhookEndpoint,
)
from allotment.notifications.sender import Outcome
from allotment.types import as_utc, new_id

log = structlog.get_logger()

# Literal, not a bound parameter: the planners only use the partial indexes for a constant.
_IS_PENDING: ColumnClause[str] = literal_column("'pending'")
DISABLED_REASON = "every attempt failed for {hours} hours; re-enable it once the receiver is fixed"


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker may attempt until its lease runs out."""

    delivery_id: str
    tenant_id: str
    endpoint_id: str
    lease: str
    attempt: int
    first_attempt_at: datetime
    url: str
    secrets: tuple[str, ...]  # the current one, and one a rotation replaced while it still signs
    message_id: str
    body: bytes
    headers: dict[str, str]


def _signing(row: Any, at: datetime) -> tuple[str, ...]:
    until = row.previous_secret_until
    if row.previous_secret is None or until is None or as_utc(until) <= at:
        return (row.secret,)
    return (row.secret, row.previous_secret)


async def fan_out(session: AsyncSession, *, at: datetime, limit: int = 1000) -> int:
    """Create the deliveries of up to `limit` new notifications; returns how many were handled."""
    if not await queries.try_fan_out_lock(session):
        return 0
    n = Notification
    rows = (await session.execute(
        select(n.seq, n.id, n.tenant_id, n.type, n.customer_id, n.endpoint_id, n.rule_id)
        .where(n.fanned_out_at.is_(None)).order_by(n.seq).limit(limit)
    )).all()
    if not rows:
        return 0
    tenants = {r.tenant_id for r in rows}
    endpoints = await _subscribers(session, tenants)
    routes = await rules.routes(session, tenants)
    # Payloads are read only where a rule could route by them: most notifications need none.
    payloads = await _payloads(session, [
        r.seq for r in rows if any(x.event_type == r.type for x in routes.get(r.tenant_id, ()))
    ])
    deliveries = [
        {"id": new_id("dlv"), "tenant_id": r.tenant_id, "notification_seq": r.seq,
         "endpoint_id": endpoint_id, "ordering_key": r.customer_id or r.id, "status": PENDING,
         "attempt_count": 0, "next_attempt_at": at, "created_at": at}
        for r in rows
        for endpoint_id in _recipients(
            r, endpoints.get(r.tenant_id, []), routes.get(r.tenant_id, []), payloads.get(r.seq)
        )
    ]
    if deliveries:
        await queries.insert_deliveries(session, deliveries)
    await session.execute(
        update(n).where(n.seq.in_([r.seq for r in rows])).values(fanned_out_at=at)
        .execution_options(synchronize_session=False)
    )
    return len(rows)


@dataclass(frozen=True)
class _Subscriber:
    id: str
    event_types: list[str]
    rules_only: bool


def _recipients(
    r: Any, endpoints: list[_Subscriber], routes: list[NotificationRule],
    payload: dict[str, Any] | None,
) -> list[str]:
    """Who gets one notification: its addressee (a ping, a rule's test), else every endpoint
    subscribed to its type plus those named by the enabled rules it matches."""
    live = [e.id for e in endpoints]
    if r.endpoint_id is not None:
        return [r.endpoint_id] if r.endpoint_id in live else []
    if r.rule_id is not None:
        addressed = [e for x in routes if x.id == r.rule_id for e in x.endpoint_ids]
        return [e for e in live if e in addressed]
    found = [e.id for e in endpoints if not e.rules_only and catalogue.subscribes(e.event_types, r.type)]
    if payload is not None:
        named = {e for x in routes if x.enabled and rules.matches(x, r.type, payload) for e in x.endpoint_ids}
        found += [e for e in live if e in named and e not in found]
    return found


async def _payloads(session: AsyncSession, seqs: list[int]) -> dict[int, dict[str, Any]]:
    if not seqs:
        return {}
    found = await session.execute(select(Notification.seq, Notification.payload).where(Notification.seq.in_(seqs)))
    return {seq: codec.loads(text) for seq, text in found}


async def _subscribers(session: AsyncSession, tenant_ids: set[str]) -> dict[str, list[_Subscriber]]:
    e = WebhookEndpoint
    rows = await session.execute(
        select(e.tenant_id, e.id, e.event_types, e.rules_only)
        .where(e.tenant_id.in_(tenant_ids), e.enabled.is_(True), e.deleted_at.is_(None))
        .order_by(e.id)
    )
    out: dict[str, list[_Subscriber]] = defaultdict(list)
    for tenant_id, endpoint_id, types, rules_only in rows:
        out[tenant_id].append(_Subscriber(endpoint_id, list(types or []), bool(rules_only)))
    return out


async def claim(session: AsyncSession, *, at: datetime, limit: int, lease_for: timedelta) -> list[Claimed]:
    """Lease up to `limit` due deliveries, at most one per endpoint and customer."""
    d, n, e = Delivery, Notification, WebhookEndpoint
    earlier = aliased(Delivery)
    held_back = exists().where(
        earlier.status == _IS_PENDING, earlier.endpoint_id == d.endpoint_id,
        earlier.ordering_key == d.ordering_key, earlier.notification_seq < d.notification_seq,
    )
    rows = (await session.execute(
        select(d.id, d.tenant_id, d.endpoint_id, d.attempt_count, d.first_attempt_at,
               n.id.label("message_id"), n.type, n.payload, n.created_at, e.url, e.secret,
               e.previous_secret, e.previous_secret_until, e.headers, e.body_format)
        .join(n, n.seq == d.notification_seq).join(e, e.id == d.endpoint_id)
        .where(d.status == _IS_PENDING, d.next_attempt_at <= at,
               or_(d.locked_until.is_(None), d.locked_until <= at),
               e.enabled.is_(True), e.deleted_at.is_(None), ~held_back)
        .order_by(d.next_attempt_at, d.notification_seq).limit(limit)
        .with_for_update(of=d, skip_locked=True)
    )).all()
    if not rows:
        return []
    lease = new_id("lse")
    await session.execute(
        update(d).where(d.id.in_([r.id for r in rows]))
        .values(locked_until=at + lease_for, lease=lease, attempt_count=d.attempt_count + 1,
                first_attempt_at=func.coalesce(d.first_attempt_at, literal(at, UTCDateTime())))
        .execution_options(synchronize_session=False)
    )
    return [
        Claimed(r.id, r.tenant_id, r.endpoint_id, lease, r.attempt_count + 1,
                r.first_attempt_at or at, r.url, _signing(r, at), r.message_id,
                bodies.body(r.body_format, r.message_id, r.type, r.created_at, r.payload),
                dict(r.headers or {}))
        for r in rows
    ]


async def record(
    session: AsyncSession, results: Sequence[tuple[Claimed, Outcome]], *, at: datetime,
    rng: random.Random,
) -> None:
    """Log each attempt and move its delivery on: delivered, retried later, or dead."""
    if not results:
        return
    await session.execute(insert(Attempt), [
        {"id": new_id("att"), "tenant_id": c.tenant_id, "delivery_id": c.delivery_id,
         "attempt": c.attempt, "at": at, "succeeded": o.succeeded, "status_code": o.status_code,
         "error": o.error, "latency_ms": o.latency_ms, "response_excerpt": o.excerpt}
        for c, o in results
    ])
    moves = [_move(c, o, at=at, rng=rng) for c, o in results]
    table = cast(Table, Delivery.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.lease == bindparam("b_lease"))
        .values(status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
                delivered_at=bindparam("b_delivered"), last_attempt_at=at, locked_until=None,
                lease=None),
        moves,
    )
    await _track_endpoints(session, results, at=at)
    dead = [c for (c, _), m in zip(results, moves, strict=True) if m["b_status"] == DEAD]
    for claimed in sorted(dead, key=lambda c: c.endpoint_id):
        await _disable_if_down(session, claimed, at=at)


def _move(c: Claimed, o: Outcome, *, at: datetime, rng: random.Random) -> dict[str, Any]:
    move: dict[str, Any] = {"b_id": c.delivery_id, "b_lease": c.lease, "b_status": PENDING,
                            "b_next": at, "b_delivered": None}
    if o.succeeded:
        move.update(b_status=DELIVERED, b_delivered=at)
    elif retries.gives_up(c.first_attempt_at, at):
        move.update(b_status=DEAD)
        log.warning("webhook dead-lettered", delivery=c.delivery_id, endpoint=c.endpoint_id,
                    message=c.message_id, attempts=c.attempt, error=o.error)
    else:
        move.update(b_next=at + retries.delay(c.attempt, jitter=rng.random()))
    return move


async def _track_endpoints(
    session: AsyncSession, results: Sequence[tuple[Claimed, Outcome]], *, at: datetime
) -> None:
    """Any success ends an endpoint's failing streak; a failure starts one if none is running."""
    e = WebhookEndpoint
    ok = sorted({c.endpoint_id for c, o in results if o.succeeded})
    failing = sorted({c.endpoint_id for c, o in results if not o.succeeded} - set(ok))
    # One statement each, rows in id order: concurrent workers lock endpoints in the same order.
    if ok:
        await session.execute(
            update(e).where(e.id.in_(ok), e.failing_since.is_not(None)).values(failing_since=None)
            .execution_options(synchronize_session=False)
        )
    if failing:
        await session.execute(
            update(e).where(e.id.in_(failing), e.failing_since.is_(None)).values(failing_since=at)
            .execution_options(synchronize_session=False)
        )


async def _disable_if_down(session: AsyncSession, claimed: Claimed, *, at: datetime) -> None:
    e = WebhookEndpoint
    reason = DISABLED_REASON.format(hours=int(retries.HORIZON.total_seconds() // 3600))
    row = (await session.execute(
        update(e)
        .where(e.id == claimed.endpoint_id, e.enabled.is_(True), e.failing_since.is_not(None),
               e.failing_since <= claimed.first_attempt_at)
        .values(enabled=False, disabled_at=at, disabled_reason=reason, updated_at=at)
        .returning(e.tenant_id, e.url, e.failing_since)
        .execution_options(synchronize_session=False)
    )).first()
    if row is None:
        return
    await service.hold_deliveries(session, claimed.endpoint_id)
    log.error("webhook endpoint disabled", endpoint=claimed.endpoint_id, tenant=row.tenant_id,
              url=row.url, failing_since=row.failing_since.isoformat(), reason=reason)
    await service.emit(
        session, row.tenant_id, type=catalogue.ENDPOINT_DISABLED,
        dedupe_key=f"{catalogue.ENDPOINT_DISABLED}:{claimed.endpoint_id}:{at.isoformat()}",
        customer_id=None, at=at,
        payload={"endpoint_id": claimed.endpoint_id, "url": row.url, "reason": reason,
                 "failing_since": row.failing_since},
    )
