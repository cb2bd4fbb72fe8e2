"""Checks and consumes in the common case: one read, then at most one locked write.

Vendors call the check before every request, so the common case must cost one indexed read.
One statement, outside any transaction, proves that the entitlement row this process
remembers for the names still answers (resolve.py) and reads the row's live counter for the
period containing `at` (on SQLite remembered until anyone commits; on PostgreSQL read
together with the checks that arrive meanwhile). The pure engine decides, as in the full
check, so both paths give the same answer. A consume is then decided again on the locked
counter and committed with the consumes that arrive with it (group_commit.py), so the
database keeps the last word on the hard limit; on PostgreSQL it skips the read, and the
statement that takes it proves the row with the same text (`queries.PROOF_AND_COUNTER`).

Whatever needs more than that goes the full way (`check.check`), which `None` asks for: an
idempotency key, a pair without an entitlement in force, seats, grants of the period (their amounts
follow from earlier periods), a row that rolls included units over (what rolled in follows from
earlier periods, its own or the row's it took over), expired holds not yet given back (giving
back writes), and a period whose overage carried from the last one is not fixed yet (fixing writes).

A deny is recorded, in a write transaction, like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.batching import Batcher
from allotment.db import Database
from allotment.entitlements import group_commit, notices, queries, resolve, standing
from allotment.entitlements.check import (
    CheckRequest,
    CheckResult,
    metered_entitlement,
    record_denial,
    units,
    usage_period,
)
from allotment.entitlements.engine import (
    BooleanEntitlement,
    Entitlement,
    Kind,
    MeteredEntitlement,
    StaticEntitlement,
    Verdict,
    decide,
)
from allotment.entitlements.models import CustomerEntitlement
from allotment.entitlements.periods import period_at
from allotment.packed import pack, rows_of
from allotment.types import to_micros

_NAMES = ("id", "tenant", "customer", "feature", "period", "since")
_SQLITE = queries.PROOF_AND_COUNTER.format(**{n: f"?{i}" for i, n in enumerate(_NAMES, 1)})
# PostgreSQL reads the keys of many checks at once (one round trip for all of them, the keys
# packed into one text: allotment/packed.py). Each key is its own lateral lookup by primary
# keys only (the customer and feature as subqueries on theirs): as one join, the planner
# scanned every customer of the tenant on each trip when its statistics predated the
# customers (a fresh database, a bulk load).
_PG_MANY = (
    "SELECT k.i, x.* FROM "
    + rows_of("$1", ["id text", "tenant text", "customer text", "feature text", "period int8",
                     "since timestamptz"])
    + " CROSS JOIN LATERAL (" + queries.PROOF_AND_COUNTER.format(**{n: f"k.{n}" for n in _NAMES}) + ") x"
)
_READS_PER_TRIP = 256


@dataclass
class _Prepared:
    """What a remembered row means for checks, worked out once per row and process."""

    row: CustomerEntitlement
    entitlement: Entitlement | None  # None for seats (never checked this way)
    # The row's columns a check reads, as plain values: ORM attribute access costs more.
    id: str
    active_from: datetime
    active_to: datetime | None
    carries_overage: bool
    rolls_over: bool  # what rolled in (from its own periods or the row it took over) needs the full way
    period: tuple[datetime, datetime | None, int] | None = None  # start, end, start in µs

    def period_at(self, at: datetime) -> tuple[datetime, datetime | None, int]:
        """The usage period containing `at`, recomputed only when `at` leaves the last one."""
        known = self.period
        if known is None or not (known[0] <= at and (known[1] is None or at < known[1])):
            start, end = period_at(usage_period(self.row), at)
            known = self.period = (start, end, to_micros(start))
        return known

    def carries_into(self, period_start: datetime) -> bool:
        """Whether overage may be carried into the period (a full check fixes it first)."""
        return self.carries_overage and standing.carries_into(self.row, period_start)


_prepared: dict[str, _Prepared] = {}


def _prepare(row: CustomerEntitlement) -> _Prepared:
    found = _prepared.get(row.id)
    if found is None or found.row is not row:
        if len(_prepared) >= 100_000:
            _prepared.clear()
        entitlement: Entitlement | None = None
        if row.kind == Kind.METERED:
            entitlement = metered_entitlement(row)
        elif row.kind == Kind.BOOLEAN:
            entitlement = BooleanEntitlement(row.has_access)
        elif row.kind == Kind.STATIC:
            entitlement = StaticEntitlement(row.config or {})
        found = _prepared[row.id] = _Prepared(
            row, entitlement, row.id, row.active_from, row.active_to, standing.may_carry(row),
            standing.rolls_over(row),
        )
    return found


class _Proven(NamedTuple):
    """A remembered row shown to still answer at `at`, and its counter in that period."""

    known: resolve.Target
    prepared: _Prepared
    entitlement: Entitlement
    period: tuple[datetime | None, datetime | None, int]
    used: int
    reserved: int


class _Remembered(NamedTuple):
    """The row this process remembers for a check's names, in force at `at` by its own times."""

    known: resolve.Target
    prepared: _Prepared
    entitlement: Entitlement
    period: tuple[datetime | None, datetime | None, int]


async def _remembered(db: Database, tenant_id: str, request: CheckRequest, at: datetime) -> _Remembered | None:
    known = resolve.remembered(tenant_id, request.customer, request.feature)
    if known is None:  # first use of the names in this process: resolve them
        known = await resolve.target_outside(db, tenant_id, request.customer, request.feature, at)
    if known.row is None:
        return None
    prepared = _prepare(known.row)
    entitlement, active_to = prepared.entitlement, prepared.active_to
    if entitlement is None or prepared.active_from > at or (active_to is not None and active_to <= at):
        return None
    period = prepared.period_at(at) if entitlement.kind == Kind.METERED else (None, None, -1)
    if prepared.rolls_over:
        return None
    return _Remembered(known, prepared, entitlement, period)


async def _prove(db: Database, tenant_id: str, request: CheckRequest, at: datetime) -> _Proven | None:
    remembered = await _remembered(db, tenant_id, request, at)
    if remembered is None:
        return None
    known, prepared, entitlement, period = remembered
    active_to, metered = prepared.active_to, entitlement.kind == Kind.METERED
    found = await _read(db, tenant_id, request, prepared.id, period[2], period[0] or at)
    if found is None:
        return None
    active_to_now, used, reserved, carried, grants, first_hold_expiry = found
    if active_to_now != active_to:
        return None
    if metered and (grants or (first_hold_expiry is not None and first_hold_expiry <= at)
                    or (carried is None and prepared.carries_into(period[0] or at))):
        return None  # an empty counter row has no carry fixed yet either
    return _Proven(known, prepared, entitlement, period, int(used or 0), int(reserved or 0))


_Row = tuple[datetime | None, int | None, int | None, int | None, bool, datetime | None]


async def _read(
    db: Database, tenant_id: str, request: CheckRequest, entitlement_id: str, period_us: int,
    since: datetime,
) -> _Row | None:
    """The proof-and-counter row, or None when the remembered row no longer answers.

    The grant flag says whether a grant of the customer's feature is live at some instant
    from `since` (the period's start) on: live now, or ended within the period (what it paid
    for before its end stays paid, which the full check works out).

    On SQLite the read is remembered until any connection commits (`Database.read_memo`),
    so a remembered read is exactly what a new read would return. Nothing in it depends on
    the time of the read but the first expiry of the open holds, which is compared with the
    check's time on every use; the key holds the period.
    """
    key = (entitlement_id, tenant_id, request.customer, request.feature, period_us)
    memo = db.read_memo()
    if memo is not None:
        known: _Row | None = memo.get(key)
        if known is not None:
            return known
    if db.is_sqlite:
        stamp = since.replace(tzinfo=None).isoformat(" ", "microseconds")
        rows = await db.point_read("", _SQLITE, entitlement_id, tenant_id, request.customer,
                                   request.feature, period_us, stamp)
        found = rows[0] if rows else None
    else:
        batcher = db.batcher("check-reads", lambda: Batcher(lambda keys: _read_many(db, keys),
                                                           limit=_READS_PER_TRIP))
        found = await batcher.submit((entitlement_id, tenant_id, request.customer, request.feature,
                                      period_us, since))
    if found is None:
        return None
    active_to, used, reserved, carried, grants, first_hold_expiry = found
    row: _Row = (resolve.utc(active_to), used, reserved, carried, bool(grants),
                 resolve.utc(first_hold_expiry))
    if memo is not None:
        memo[key] = row
    return row


async def _read_many(db: Database, keys: list[tuple[Any, ...]]) -> list[Any]:
    """The rows of many checks' keys in one statement, in the keys' order (None: not found).

    Checks that arrive while a read is in flight wait for the next (allotment/batching.py):
    under load one round trip serves many checks, and a lone check does not wait."""
    rows = await db.point_read(_PG_MANY, "", pack(keys))
    found: list[Any] = [None] * len(keys)
    for row in rows:
        found[row[0] - 1] = tuple(row[1:])
    return found


async def check(db: Database, tenant_id: str, request: CheckRequest, at: datetime) -> CheckResult | None:
    """The answer to a check without idempotency key, or None: use the full check.

    With `consume`, the increment is decided on the locked counter by the rule of the full
    check's conditional statement (group_commit.py): the database still has the last word on
    the hard limit. A grant or hold that appears between the read and the increment can only
    make this answer more cautious than the full check's, never let usage past the limit.
    """
    if request.idempotency_key is not None:
        return None
    # A PostgreSQL consume reads nothing first: the statement that takes it proves the row.
    if request.consume and not db.is_sqlite:
        remembered = await _remembered(db, tenant_id, request, at)
        if remembered is None:
            return None
        known, prepared, entitlement, period = remembered
        if entitlement.kind == Kind.METERED:
            proof = group_commit.Proof(prepared.active_to, prepared.carries_into(period[0] or at))
            return await _consume(db, tenant_id, request, known, prepared, period, at, proof)
    proven = await _prove(db, tenant_id, request, at)
    if proven is None:
        return None
    if request.consume and proven.entitlement.kind == Kind.METERED:
        proof = group_commit.Proof(proven.prepared.active_to, False)  # the read proved the rest
        return await _consume(db, tenant_id, request, proven.known, proven.prepared, proven.period, at, proof)
    start, end, _ = proven.period
    q = request.quantity
    if proven.entitlement.kind == Kind.METERED:
        decision = decide(proven.entitlement, usage=units(proven.used), reserved=units(proven.reserved),
                          quantity=q, at=at)
    else:
        decision = decide(proven.entitlement, quantity=q, at=at)
    result = CheckResult(decision, start, end)
    if decision.decision is Verdict.DENY:
        async with db.transaction() as session:
            await _deny(session, tenant_id, request, proven, result, at)
    return result


async def _consume(
    db: Database, tenant_id: str, request: CheckRequest, known: resolve.Target, prepared: _Prepared,
    period: tuple[datetime | None, datetime | None, int], at: datetime, proof: group_commit.Proof | None = None,
) -> CheckResult | None:
    ent = prepared.entitlement
    assert isinstance(ent, MeteredEntitlement)
    start, end, _ = period
    assert start is not None  # metered rows always have a period
    where = notices.Where(tenant_id, prepared.id, known.customer_id, known.feature_id, start, end)
    return await group_commit.consume(db, group_commit.Consume(request, ent, where, at, proof))


async def _deny(
    session: AsyncSession, tenant_id: str, request: CheckRequest, proven: _Proven, result: CheckResult,
    at: datetime,
) -> None:
    known = proven.known
    await record_denial(session, tenant_id, known.customer_id, known.feature_id, request, result, at,
                        entitlement_id=proven.prepared.id)
