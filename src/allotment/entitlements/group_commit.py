"""Group commit: the consumes a process receives at the same time share one transaction.

A consume costs mostly its transaction (BEGIN, COMMIT and, on SQLite, an fsync), not its
one increment. While a transaction of consumes commits, the consumes that arrive queue, and
the next transaction takes them all: it locks their counter rows in one statement, decides
each consume in arrival order against the locked counter by the rule of the single
conditional increment (`used + reserved + quantity <= hard limit`), writes the sums in one
statement, records denials and notifications, and commits. Nobody is answered before that
commit, so an allow is durable when it is sent. The rows stay locked until the commit:
consumers in other processes wait for it and then see the new counters, so the hard limit
holds exactly as it does for one consume at a time.

A transaction that fails is retried one consume at a time, so a consume that cannot be
committed fails alone.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database
from allotment.entitlements import notices, queries
from allotment.entitlements.check import CheckRequest, CheckResult, millionths, record_denial, units
from allotment.entitlements.engine import Decision, MeteredEntitlement, Reason, Verdict, decide

_BATCH = 256  # consumes per transaction, at most


@dataclass
class Consume:
    """One consume of a metered entitlement proven to be in force at `at`."""

    request: CheckRequest
    entitlement: MeteredEntitlement
    where: notices.Where
    at: datetime

    @property
    def counter(self) -> queries.Counter:
        return (self.where.tenant_id, self.where.entitlement_id, self.where.period_us)


@dataclass
class _Queue:
    waiting: list[tuple[Consume, asyncio.Future[CheckResult]]] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None


_queues: weakref.WeakKeyDictionary[Database, _Queue] = weakref.WeakKeyDictionary()


async def consume(db: Database, item: Consume) -> CheckResult:
    """The answer to `item`, once the transaction that decided it has committed."""
    queue = _queues.get(db)
    if queue is None:
        queue = _queues[db] = _Queue()
    answer: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
    queue.waiting.append((item, answer))
    if queue.drain is None:
        queue.drain = asyncio.ensure_future(_drain(db, queue))
    return await answer


async def _drain(db: Database, queue: _Queue) -> None:
    try:
        while queue.waiting:
            batch, queue.waiting = queue.waiting[:_BATCH], queue.waiting[_BATCH:]
            try:
                results = await _commit(db, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001  (each consume is tried alone below)
                if len(batch) == 1:
                    _answer(batch[0][1], error=exc)
                    continue
                for item, answer in batch:
                    try:
                        _answer(answer, (await _commit(db, [item]))[0])
                    except Exception as alone:  # noqa: BLE001  (handed to the one who asked)
                        _answer(answer, error=alone)
                continue
            for (_, answer), result in zip(batch, results, strict=True):
                _answer(answer, result)
    finally:
        queue.drain = None


def _answer(answer: asyncio.Future[CheckResult], result: CheckResult | None = None, *,
            error: BaseException | None = None) -> None:
    if answer.done():  # the one who asked has gone away
        return
    if error is not None:
        answer.set_exception(error)
    else:
        assert result is not None
        answer.set_result(result)


async def _commit(db: Database, batch: list[Consume]) -> list[CheckResult]:
    async with db.transaction() as session:
        return await decide_all(session, batch)


async def decide_all(session: AsyncSession, batch: list[Consume]) -> list[CheckResult]:
    """Decide and record `batch` in order, in the session's transaction."""
    counters = await queries.lock_counters(session, [item.counter for item in batch])
    increments: dict[queries.Counter, int] = {}
    results: list[CheckResult] = []
    moved: list[tuple[Decimal, Decision] | None] = []  # usage before and decision after, or denied
    for item in batch:
        used, reserved = counters[item.counter]
        ent, q, at, where = item.entitlement, item.request.quantity, item.at, item.where
        hard = queries.MAX_BIGINT if ent.hard_limit is None else min(millionths(ent.hard_limit),
                                                                     queries.MAX_BIGINT)
        if used + reserved + millionths(q) > hard:  # what the conditional increment refuses
            now = decide(ent, usage=units(used), reserved=units(reserved), quantity=q, at=at)
            results.append(CheckResult(replace(now, decision=Verdict.DENY, reason=Reason.HARD_LIMIT),
                                       where.period_start, where.period_end))
            moved.append(None)
            continue
        used += millionths(q)
        counters[item.counter] = (used, reserved)
        increments[item.counter] = increments.get(item.counter, 0) + millionths(q)
        # As in the full check: the verdict is the state before the increment, the numbers after.
        before = decide(ent, usage=units(used) - q, reserved=units(reserved), quantity=q, at=at)
        after = decide(ent, usage=units(used), reserved=units(reserved), quantity=q, at=at)
        results.append(CheckResult(replace(after, decision=before.decision, reason=before.reason),
                                   where.period_start, where.period_end))
        moved.append((units(used) - q, after))
    await queries.add_to_locked(session, increments)
    # Then what each consume tells, in order, with the counters already written.
    for item, result, move in zip(batch, results, moved, strict=True):
        where = item.where
        if move is None:
            await record_denial(session, where.tenant_id, where.customer_id, where.feature_id,
                                item.request, result, item.at, entitlement_id=where.entitlement_id)
        else:
            await notices.usage_moved(session, where, before=move[0], after=move[1], at=item.at)
    return results
