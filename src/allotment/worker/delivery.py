"""The delivery loop: suggest, fan out, claim, send, record — run by `allotment serve` and `allotment worker`.

Short transactions (fan out, claim, then record what was answered) and none during HTTP:
a slow receiver holds a lease, never a lock or a connection, and its late answer is recorded
on its own rather than holding back the rest of the round. A worker killed mid-round leaves leased deliveries that any
worker retries once their lease runs out (at least once; the retry carries the same
`webhook-id`). A claimed batch holds at most one message per endpoint and customer, so it
is sent concurrently without breaking any customer's order. Each round first turns the
upsell projections that crossings asked for into notifications (entitlements/upsell_queue.py).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from allotment.config import Settings
from allotment.db import Database
from allotment.entitlements import hold_expiry, notices, resets, scheduled, upsell_queue
from allotment.migrations import all_models  # noqa: F401  (foreign keys name every domain's tables)
from allotment.notifications import outbox, queries, sender, service, signing
from allotment.notifications.lanes import Lanes
from allotment.types import utcnow
from allotment.worker import retention
from allotment.worker.failures import Failures
from allotment.worker.stopping import nap

_rng = random.SystemRandom()
_upsell_failures = Failures("projecting upsell asks failed")  # per process: every loop's rounds


@dataclass(frozen=True)
class DeliveryOptions:
    batch: int = 200
    timeout: float = 10.0
    lease: timedelta = timedelta(seconds=60)
    idle_seconds: float = 0.25
    # Concurrent requests to one endpoint per loop (each on a keep-alive connection of its own).
    lanes: int = 100
    # Loops per process: while one loop sends a batch, another claims or records the next.
    loops: int = 2
    # How often to look for notifications that time emits rather than usage (grant.expiring),
    # and to forget idempotency keys older than `idempotency_retention`.
    scan_seconds: float = 60.0
    idempotency_retention: timedelta = timedelta(hours=24)
    # Answers that came within this many seconds are recorded together; later ones as they
    # come, so a hanging receiver does not hold back the rest of the round (see _record).
    record_grace: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOptions:
        timeout = settings.delivery_timeout_seconds
        # The lease outlives the longest attempt, so it never runs out while one is in flight.
        lease = max(settings.delivery_lease_seconds, timeout + 5)
        return cls(timeout=timeout, lease=timedelta(seconds=lease),
                   idempotency_retention=timedelta(hours=settings.idempotency_retention_hours))


def http_lanes(options: DeliveryOptions) -> Lanes:
    return Lanes(timeout=options.timeout, per_endpoint=options.lanes)


async def deliver_due(
    db: Database, lanes: Lanes, *, at: datetime,
    options: DeliveryOptions = DeliveryOptions(), rng: random.Random = _rng,
) -> int:
    """One round at time `at`; returns how many attempts were made."""
    try:
        await upsell_queue.suggest_due(db)  # what crossings asked for goes out in this round
        _upsell_failures.succeeded()
    except Exception:  # noqa: BLE001 (logged by failures) never in the way of delivery; asks stay for the next round
        _upsell_failures.failed()
    if not await queries.anything_due(db, at=at):
        return 0
    async with db.transaction() as session:
        await outbox.fan_out(session, at=at)
    async with db.transaction() as session:
        claimed = await outbox.claim(session, at=at, limit=options.batch, lease_for=options.lease)
    if not claimed:
        return 0
    per_endpoint: Counter[str] = Counter()
    sends: dict[asyncio.Task[sender.Outcome], outbox.Claimed] = {}
    for c in claimed:
        client = await lanes.client(c.endpoint_id, per_endpoint[c.endpoint_id])
        per_endpoint[c.endpoint_id] += 1
        sends[asyncio.ensure_future(_send(client, c, at=at, timeout=options.timeout))] = c
    try:
        await _record(db, sends, at=at, rng=rng, grace=options.record_grace)
    finally:
        for task in sends:
            task.cancel()
    return len(claimed)


async def _record(
    db: Database, sends: dict[asyncio.Task[sender.Outcome], outbox.Claimed], *, at: datetime,
    rng: random.Random, grace: float,
) -> None:
    """Record what was answered within `grace` in one transaction, then each later answer as
    it comes. Until its outcome is recorded a delivery stays pending, holding back its
    customer's next message to that endpoint: waiting for a receiver that hangs until the
    timeout would hold back every other endpoint's customers in the round as well."""
    done, waiting = await asyncio.wait(set(sends), timeout=grace)
    while True:
        if done:
            async with db.transaction() as session:
                await outbox.record(session, [(sends[t], t.result()) for t in done], at=at, rng=rng)
        if not waiting:
            return
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)


async def _send(client: sender.Client, c: outbox.Claimed, *, at: datetime, timeout: float) -> sender.Outcome:
    # The endpoint's own headers cannot name the signature headers (schemas.check_headers).
    headers = {**c.headers, **signing.headers(c.secrets, message_id=c.message_id, at=at, body=c.body)}
    return await sender.post(client, c.url, body=c.body, headers=headers, timeout=timeout)


async def scan_due(db: Database, *, at: datetime) -> int:
    """Emit what is due by time alone (grants expiring within their lead time, period resets,
    scheduled changes taking effect, holds expired untouched); returns how many.

    Every worker scans; dedupe keys make concurrent scans emit each notification once.
    """
    while True:
        async with db.transaction() as session:
            if await resets.note_period_ends(session) < resets.NOTE_BATCH:
                break
    told = 0
    while True:  # each pass expires some holds or ends the loop, even when others are locked
        async with db.transaction() as session:
            expired = await hold_expiry.sweep_due(session, at=at)
        told += expired
        if not expired:
            break
    for scan in (notices.expiring_grants, resets.tell_due, scheduled.tell_due):
        async with db.transaction() as session:
            told += await scan(session, at=at)
    async with db.transaction() as session:
        await service.settle_held_deliveries(session, at=at)
    return told


async def run_delivery(db: Database, options: DeliveryOptions, stop: asyncio.Event) -> None:
    """Run `options.loops` delivery loops and the periodic scan until `stop` is set."""
    await asyncio.gather(*(_loop(db, options, stop) for _ in range(options.loops)),
                         _scan_loop(db, options, stop))


async def _scan_loop(db: Database, options: DeliveryOptions, stop: asyncio.Event) -> None:
    failures = Failures("periodic scan failed")
    while not stop.is_set():
        at = utcnow()
        try:
            await scan_due(db, at=at)
            await retention.forget_idempotency_keys(db, before=at - options.idempotency_retention)
            failures.succeeded()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 (logged by failures) the next scan finds whatever this one missed
            failures.failed()
        await nap(stop, options.scan_seconds)


async def _loop(db: Database, options: DeliveryOptions, stop: asyncio.Event) -> None:
    """Deliver until `stop` is set; sleeps only when a round found less than a full batch."""
    failures = Failures("webhook delivery round failed")
    async with http_lanes(options) as lanes:
        while not stop.is_set():
            try:
                sent = await deliver_due(db, lanes, at=utcnow(), options=options)
                failures.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (logged by failures) claimed rows keep their lease, retried after it
                failures.failed()
                sent = 0
            if sent < options.batch:
                await nap(stop, options.idle_seconds)
