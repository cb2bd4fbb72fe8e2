"""Group commit: the consumes a process receives at the same time share one transaction.

A consume costs mostly its transaction (BEGIN, COMMIT and, on SQLite, an fsync), not its
one increment. While a transaction of consumes commits, the consumes that arrive queue, and
the next transaction takes them all. On PostgreSQL it first offers every counter the sum of
its consumes in one conditional upsert (`queries.take_whole`): a counter with room for all of
them takes it, and each of its consumes is allowed (every prefix of the sum fits too). The
other counters are locked in one statement, their consumes decided in arrival order against
the locked counter by the rule of the single conditional increment (`used + reserved +
quantity <= hard limit`), and their sums written in one more. Then denials and notifications
are recorded, and the transaction commits. A batch with nothing to record but its counters
takes a leaner way on PostgreSQL: the same first statement on a driver connection, without
the ORM session (`_commit_quietly`). Nobody is answered before that commit, so an
allow is durable when it is sent. The rows stay locked until the commit: consumers in other
processes wait for it and then see the new counters, so the hard limit holds exactly as it
does for one consume at a time.

A transaction that fails is retried one consume at a time (allotment/batching.py), so a
consume that cannot be committed fails alone.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.batching import Batcher
from allotment.db import Database
from allotment.entitlements import notices, queries
from allotment.entitlements.check import (
    CheckRequest,
    CheckResult,
    millionths,
    record_denial,
    refusal,
    units,
)
from allotment.entitlements.engine import Decision, MeteredEntitlement, Verdict, decide

_BATCH = 256  # consumes per transaction, at most


def _hard(ent: MeteredEntitlement) -> int:
    """The hard limit in millionths (the largest counter value without one)."""
    return queries.MAX_BIGINT if ent.hard_limit is None else min(millionths(ent.hard_limit), queries.MAX_BIGINT)


class Proof(NamedTuple):
    """What proves a remembered entitlement row still answers a consume's names (fastpath.py)."""

    active_to: datetime | None
    carries: bool


@dataclass(slots=True)
class Consume:
    """One consume of a metered entitlement in force at `at`: proven already, or with the
    `proof` to check in the statement that takes it (PostgreSQL)."""

    request: CheckRequest
    entitlement: MeteredEntitlement
    where: notices.Where
    at: datetime
    proof: Proof | None = None  # what the row was read as: it is held to it (queries.hold_rows)

    @property
    def counter(self) -> queries.Counter:
        return (self.where.tenant_id, self.where.entitlement_id, self.where.period_us)


async def consume(db: Database, item: Consume) -> CheckResult | None:
    """The answer to `item`, once the transaction that decided it has committed; None when
    its `proof` failed (the caller then takes the full way: nothing was written)."""
    if item.proof is not None and not db.is_sqlite:
        proving = db.batcher("consume-proving", lambda: Batcher(lambda batch: _take_proven(db, batch),
                                                                limit=_BATCH))
        taken: CheckResult | None | _Leftover = await proving.submit(item)
        if not isinstance(taken, _Leftover):
            return taken
    batcher = db.batcher("consume", lambda: Batcher(lambda batch: _commit(db, batch), limit=_BATCH))
    result: CheckResult | None = await batcher.submit(item)
    return result


class _Leftover:
    """Proven, but not taken in one quiet statement: decided the full way of the group commit."""


_LEFTOVER = _Leftover()


async def _take_proven(db: Database, batch: list[Consume]) -> list[CheckResult | None | _Leftover]:
    """The common case on PostgreSQL in one statement of its own (`queries.take_proven`): it
    proves each counter's row, and takes all its consumes where the counter has room for them
    and nothing would be told. What that statement committed is answered here, and only pure
    work follows it, so a batch that fails has written nothing (the batcher may run it again)."""
    groups: dict[queries.Counter, list[int]] = {}
    for n, item in enumerate(batch):
        groups.setdefault(item.counter, []).append(n)
    answers: list[CheckResult | None | _Leftover] = [_LEFTOVER] * len(batch)
    counters: list[queries.Proven] = []
    members: list[list[int]] = []
    for key, indexes in groups.items():
        first = batch[indexes[0]]
        same = [n for n in indexes if batch[n].request[:2] == first.request[:2]]
        for n in set(indexes) - set(same):
            answers[n] = None  # named otherwise than the first: proven by the full check
        counters.append(_proven(key, [batch[n] for n in same]))
        members.append(same)
    found = await queries.take_proven(db, counters)
    for n, (counter, same) in enumerate(zip(counters, members, strict=True)):
        if n not in found:
            for i in same:
                answers[i] = None
            continue
        after = found[n]
        if after is None:
            continue  # leftover
        items = [batch[i] for i in same]
        before = {counter.counter: (after[0] - counter.quantity, after[1], after[2])}
        results, _, _ = _decide(items, before, before)
        for i, result in zip(same, results, strict=True):
            answers[i] = result
    return answers


def _proven(key: queries.Counter, items: list[Consume]) -> queries.Proven:
    first = items[0]
    assert first.proof is not None
    ent, where = first.entitlement, first.where
    levels, quiet = notices.quiet_levels(where, ent)
    total, hard = sum(millionths(i.request.quantity) for i in items), _hard(ent)
    if total > hard:  # never taken whole (and may not fit 64 bits): decided consume by consume
        total, quiet = hard, False
    return queries.Proven(
        counter=key, quantity=total, hard=hard,
        customer=first.request.customer, feature=first.request.feature, active_to=first.proof.active_to,
        since=where.period_start, at=max(i.at for i in items), carries=first.proof.carries,
        watch=levels is not None, quiet=quiet, levels=levels or (),
    )


async def _commit(db: Database, batch: list[Consume]) -> list[CheckResult | None]:
    if not db.is_sqlite:
        quiet = await _commit_quietly(db, batch)
        if quiet is not None:
            return quiet
    async with db.transaction() as session:
        return await decide_all(session, batch)


class _Telling(Exception):
    """The batch has something to record besides its counters: undo, take the full way."""


async def _commit_quietly(db: Database, batch: list[Consume]) -> list[CheckResult | None] | None:
    """The common case on PostgreSQL, without the ORM session's cost: every counter takes all
    its consumes in one statement and nothing is denied or crosses anything to tell. None
    (and nothing written) when that is not so: the full way then decides the batch."""
    wanted = _wanted(batch)
    try:
        async with db.driver_transaction() as connection:
            read = _read_as(batch)
            if len(await queries.hold_rows_on(connection, read)) < len(read):
                raise _Telling  # a row ended since it was read: the full way answers which
            taken = await queries.take_whole_on(connection, wanted)
            if len(taken) < len(wanted):
                raise _Telling
            results, moved, _ = _decide(batch, dict(taken), taken)
            for item, move in zip(batch, moved, strict=True):
                if move is None or notices.would_tell(item.where, before=move[0], after=move[1],
                                                      opening=move[2]) is not False:
                    raise _Telling
    except _Telling:
        return None
    return list(results)


def _read_as(batch: list[Consume]) -> dict[str, datetime | None]:
    """Each proven row's `active_to` as it was read (queries.hold_rows)."""
    return {item.where.entitlement_id: item.proof.active_to for item in batch if item.proof is not None}


def _wanted(batch: list[Consume]) -> dict[queries.Counter, tuple[int, int]]:
    """Each counter's (sum of its consumes, hard limit), in millionths."""
    wanted: dict[queries.Counter, tuple[int, int]] = {}
    for item in batch:
        total, hard = wanted.get(item.counter, (0, _hard(item.entitlement)))
        wanted[item.counter] = (total + millionths(item.request.quantity), hard)
    return wanted


async def decide_all(session: AsyncSession, batch: list[Consume]) -> list[CheckResult | None]:
    """Decide and record `batch` in order, in the session's transaction; None for a consume
    whose row ended since it was read (nothing written for it: the full check answers it)."""
    held = await queries.hold_rows(session, _read_as(batch))
    kept = [n for n, item in enumerate(batch) if item.proof is None or item.where.entitlement_id in held]
    answers: list[CheckResult | None] = [None] * len(batch)
    for n, answer in zip(kept, await _decide_and_record(session, [batch[n] for n in kept]), strict=True):
        answers[n] = answer
    return answers


async def _decide_and_record(session: AsyncSession, batch: list[Consume]) -> list[CheckResult]:
    wanted = _wanted(batch)
    # Usually every counter can take all its consumes: one statement adds them (PostgreSQL).
    taken = await queries.take_whole(session, wanted)
    counters = taken | await queries.lock_counters(session, [c for c in wanted if c not in taken])
    results, moved, increments = _decide(batch, counters, taken)
    await queries.add_to_locked(session, increments)
    # Then what each consume tells, in order, with the counters already written.
    pending = notices.Pending()
    for item, result, move in zip(batch, results, moved, strict=True):
        where = item.where
        if move is None:
            await record_denial(session, where.tenant_id, where.customer_id, where.feature_id,
                                item.request, result, item.at, entitlement_id=where.entitlement_id)
        else:
            await notices.usage_moved(session, where, before=move[0], after=move[1], at=item.at, opening=move[2],
                                      pending=pending)
    await pending.write(session)
    return results


# Usage before, the decision after and the overage carried into the period; None: denied.
Moved = tuple[Decimal, Decision, Decimal] | None


def _decide(
    batch: list[Consume], counters: dict[queries.Counter, queries.Totals], taken: Container[queries.Counter]
) -> tuple[list[CheckResult], list[Moved], dict[queries.Counter, int]]:
    """Each consume in order against its counter's value before the batch (`counters`, updated
    as it goes); what still has to be added to counters not `taken` whole."""
    increments: dict[queries.Counter, int] = {}
    results: list[CheckResult] = []
    moved: list[Moved] = []
    for item in batch:
        used, reserved, carried = counters[item.counter]
        used = max(used, 0)  # below zero gives no room, and a consume counts from zero (queries._SEEN_PG)
        ent, q, at, where = item.entitlement, item.request.quantity, item.at, item.where
        if used + reserved + millionths(q) > _hard(ent):  # what the conditional increment refuses
            now = decide(ent, usage=units(used), reserved=units(reserved), quantity=q, at=at)
            denied = now._replace(decision=Verdict.DENY, reason=refusal(used, reserved, q))
            results.append(CheckResult(denied, where.period_start, where.period_end))
            moved.append(None)
            continue
        used += millionths(q)
        counters[item.counter] = (used, reserved, carried)
        if item.counter not in taken:
            increments[item.counter] = increments.get(item.counter, 0) + millionths(q)
        # As in the full check: the verdict is the state before the increment, the numbers after.
        before = decide(ent, usage=units(used) - q, reserved=units(reserved), quantity=q, at=at)
        after = decide(ent, usage=units(used), reserved=units(reserved), quantity=q, at=at)
        results.append(CheckResult(after._replace(decision=before.decision, reason=before.reason),
                                   where.period_start, where.period_end))
        moved.append((units(used) - q, after, units(carried)))
    return results, moved, increments
