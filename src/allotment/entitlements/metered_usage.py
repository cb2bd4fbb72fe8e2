"""Events move the live counters of metered entitlements, in the ingest transaction.

A metered feature linked to a meter counts what that meter adds for the customer's subjects
(optionally only for some group-by values), so a check right after an acknowledged ingest
sees the usage. Only additive meters (SUM, COUNT) feed counters: a MAX or LATEST is not a
quantity that accumulates. An event lands in the usage period its own time falls in, so late
events count where they belong.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.batching import Batcher
from allotment.customers.models import CustomerSubject
from allotment.db import Database, fetch
from allotment.entitlements import grant_ends, notices, queries, standing
from allotment.entitlements.check import (
    continues_counter,
    metered_entitlement,
    standing_now,
    units,
    usage_period,
)
from allotment.entitlements.crossings import worth_watching
from allotment.entitlements.features import ADDITIVE
from allotment.entitlements.models import (
    CustomerEntitlement,
    EntitlementUsage,
    Feature,
    GrantRecord,
)
from allotment.entitlements.periods import UsagePeriod, period_at
from allotment.metering import ingest as metering_ingest
from allotment.metering.aggregation import Aggregation, CompiledMeter, DataError, parse_group_key
from allotment.metering.meters import compile_meter
from allotment.metering.models import EVENT_MINUTE, Meter, event_minute
from allotment.types import from_micros, to_micros


@dataclass(frozen=True)
class Batch:
    """One request's batch of events for a tenant, decoded (and prepared, if the catalogue was
    at hand)."""

    tenant_id: str
    batch: metering_ingest.Batch


_REQUESTS_PER_COMMIT = 16


async def ingest_together(db: Database, batch: Batch) -> metering_ingest.IngestResult:
    """`ingest` in one transaction with the batches that this process's other requests send
    meanwhile (allotment/batching.py), answered once it has committed.

    A commit costs about as much as the statements before it (SQLite writes every index page
    a transaction dirtied to its log, and batches of random ids share pages; PostgreSQL waits
    for its log flush), and so does each statement: requests that queue for the database while
    one commits are stored together, each tenant's batches in one insert. A shared transaction
    that fails is retried one request at a time, so a batch that cannot be stored fails alone.
    """
    batcher = db.batcher("ingest", lambda: Batcher(lambda batches: _ingest_all(db, batches),
                                                   limit=_REQUESTS_PER_COMMIT))
    result: metering_ingest.IngestResult = await batcher.submit(batch)
    return result


async def _ingest_all(db: Database, batches: list[Batch]) -> list[metering_ingest.IngestResult]:
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for i, b in enumerate(batches):
        by_tenant[b.tenant_id].append(i)
    results: list[metering_ingest.IngestResult | None] = [None] * len(batches)
    async with db.transaction() as session:
        for tenant_id, indexes in by_tenant.items():
            stored = await ingest(session, tenant_id, [batches[i].batch for i in indexes])
            for i, result in zip(indexes, stored, strict=True):
                results[i] = result
    return [r for r in results if r is not None]


async def ingest(
    session: AsyncSession, tenant_id: str, batches: list[metering_ingest.Batch]
) -> list[metering_ingest.IngestResult]:
    """Store batches (metering) and move the live counters they feed, in one transaction."""
    results = await metering_ingest.ingest(session, tenant_id, batches)
    at = from_micros(max(b.received_us for b in batches))
    await feed(session, tenant_id, results, at=at)
    return results


@dataclass
class _Target:
    """One metered entitlement fed by one meter for one subject."""

    entitlement_id: str
    row: CustomerEntitlement
    has_grants: bool
    has_recurring: bool  # a grant that starts over (grant_ends keeps usage at each start)
    group_filter: dict[str, str]
    period: UsagePeriod
    active_from_us: int
    active_to_us: int | None
    # The start of the row's latest period whose carry is fixed (None: none, or the row never
    # carries overage; read only for rows that may).
    carry_fixed_us: int | None = None
    _span: tuple[int, int | None] = field(default=(0, 0))
    # The row that took over this one's counter mid-period (checks.continues_counter), and the
    # start of that period: usage of it reported late still counts, on the row in force.
    successor: _Target | None = None
    handed_over_us: int | None = None

    def counting(self, period_us: int) -> _Target:
        """The target whose counter holds this row's period starting at `period_us`."""
        target = self
        while target.successor is not None and target.handed_over_us == period_us:
            target = target.successor
        return target

    def accepts(self, meter: CompiledMeter, group_key: str, time_us: int) -> bool:
        if time_us < self.active_from_us or (self.active_to_us is not None and time_us >= self.active_to_us):
            return False
        if not self.group_filter:
            return True
        values = parse_group_key(group_key)  # long values in their bounded form, as filters map them
        return all(values.get(name) == meter.group_value_form(value) for name, value in self.group_filter.items())

    def carry_unfixed(self, period_us: int, at: datetime) -> bool:
        """Whether overage still has to be carried into the period starting at `period_us`,
        the current one (at `at`) of this row in force: the period whose carry a full check at
        `at` would fix. Late usage of an earlier period leaves its carry to the replay."""
        fixed = self.carry_fixed_us is not None and self.carry_fixed_us >= period_us
        if fixed or not standing.may_carry(self.row):
            return False
        at_us = to_micros(at)
        if at_us < self.active_from_us or (self.active_to_us is not None and at_us >= self.active_to_us):
            return False
        start = period_at(self.period, at)[0]
        return to_micros(start) == period_us and standing.carries_into(self.row, start)

    def period_start(self, time_us: int) -> int:
        """The start of the period holding `time_us`; consecutive events reuse the last one."""
        start, end = self._span
        if not (start <= time_us and (end is None or time_us < end)) or self._span == (0, 0):
            lo, hi = period_at(self.period, from_micros(time_us))
            self._span = (to_micros(lo), to_micros(hi) if hi is not None else None)
        return self._span[0]


async def feed(
    session: AsyncSession, tenant_id: str, results: list[metering_ingest.IngestResult], *, at: datetime
) -> None:
    additive = {
        meter.id for r in results if r.stored is not None
        for of_type in r.stored.catalogue.by_type.values() for meter in of_type
        if meter.aggregation in ADDITIVE
    }
    if not additive or not any(r.accepted for r in results):
        return
    linked = await queries.linked_meters(session, tenant_id, additive)
    if not linked:  # the common case of pure metering: one cheap look at a small table
        return
    counted = [c for r in results for c in r.counted(linked)]
    if not counted:
        return
    earliest = from_micros(min(c.time_us for c in counted))
    targets = await _targets(
        session, tenant_id, {c.meter.id for c in counted}, {c.subject for c in counted}, earliest
    )
    if not targets:
        return
    increments: dict[tuple[str, int], int] = defaultdict(int)
    timed: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)  # counters with grants
    fed: dict[str, _Target] = {}
    for c in counted:
        for target in targets.get((c.meter.id, c.subject), ()):
            if target.accepts(c.meter, c.contribution.group_key, c.time_us):
                period_us = target.period_start(c.time_us)
                counting = target.counting(period_us)
                increments[(counting.entitlement_id, period_us)] += c.contribution.micros
                if counting.has_grants:
                    timed[(counting.entitlement_id, period_us)].append((c.time_us, c.contribution.micros))
                fed[counting.entitlement_id] = counting
    await _fix_carries(session, tenant_id, list(increments), fed, at)
    if any(fed[e].has_grants for e, _ in increments):  # keeping grants' usage locks each counter:
        await queries.lock_counters(session, [(tenant_id, e, p) for e, p in increments])  # all, in order
    for entitlement_id, period_us in increments:
        target = fed[entitlement_id]
        if target.has_grants:  # usage of grants that started or ended in the period is kept first
            await grant_ends.record(session, target.row, from_micros(period_us), at,
                                    recurs=target.has_recurring)
            await grant_ends.count_late(session, target.row, from_micros(period_us),
                                        timed[(entitlement_id, period_us)])
    after = await queries.add_usage(session, tenant_id, [(e, p, q) for (e, p), q in increments.items()])
    pending = notices.Pending()  # what the batch crossed, written in one statement
    for (entitlement_id, period_us), totals in after.items():
        await _moved(session, fed[entitlement_id], period_us, totals, increments[(entitlement_id, period_us)],
                     at, pending)
    await pending.write(session)


async def _fix_carries(
    session: AsyncSession, tenant_id: str, counters: list[tuple[str, int]], fed: dict[str, _Target],
    at: datetime,
) -> None:
    """Carry the overage into each current period this batch moves whose carry is not fixed
    yet, before the batch's usage lands, as a full check would (checks.standing_now): the
    batch's crossings then count from the carry, and grants keep usage that includes it.

    Only rows that may carry, in a period not fixed yet, pay: `_targets` read where their
    carries stand. Every counter of the batch is locked first, in key order as `add_usage`
    locks them, so a batch never holds one counter while waiting for another that a concurrent
    batch holds; the fix itself is conditional (`queries.fix_carry`), so exactly one of any
    concurrent checks and batches carries the overage in.
    """
    unfixed = sorted((e, p) for e, p in counters if fed[e].carry_unfixed(p, at))
    if not unfixed:
        return
    await queries.lock_counters(session, [(tenant_id, e, p) for e, p in counters])
    for entitlement_id, _ in unfixed:
        await standing_now(session, fed[entitlement_id].row, at)


async def _moved(
    session: AsyncSession, target: _Target, period_us: int, totals: queries.Totals, added: int, at: datetime,
    pending: notices.Pending,
) -> None:
    """Tell of the thresholds this batch crossed on one counter (entitlements/notices.py)."""
    used, reserved, carried = totals
    row = target.row
    ent = metered_entitlement(row)
    soft = ent.included if ent.soft_limit is None else ent.soft_limit
    replay = target.has_grants or standing.rolls_over(row)  # grants, or included units rolled in
    if not worth_watching(soft, ent.hard_limit) and not replay:
        return
    start, end = period_at(target.period, from_micros(period_us))
    if end is not None and end <= at:
        return  # late usage of a period already over: nothing left to warn of or reset
    grants = (await standing.standing(session, row, at)).grants if replay else ()
    numbers = notices.standing_of(ent, units(used), units(reserved), grants, at)
    where = notices.Where(row.tenant_id, row.id, row.customer_id, row.feature_id, start, end)
    await notices.usage_moved(session, where, before=units(used - added), after=numbers, at=at,
                              opening=units(carried), pending=pending)


async def count_past_events(session: AsyncSession, row: CustomerEntitlement) -> None:
    """Count the stored events a new row covers: one that starts in the past (a backdated
    subscription) owns the usage its customer's events reported since then, as ingest would
    have counted it had the row existed. The caller holds the tenant's ingest lock
    exclusively, so no event is counted both here and by a concurrent ingest."""
    increments = await _reported(session, row, since=row.active_from)
    await queries.add_usage(session, row.tenant_id, [(row.id, p, q) for p, q in increments.items() if q])


async def reported_since(session: AsyncSession, row: CustomerEntitlement, since: datetime) -> Decimal:
    """What the row's customer's events reported for it from `since` to the end of the period
    holding `since`: usage its counter holds that came after that instant."""
    period_us = to_micros(period_at(usage_period(row), since)[0])
    return units((await _reported(session, row, since=since)).get(period_us, 0))


async def _reported(session: AsyncSession, row: CustomerEntitlement, *, since: datetime) -> dict[int, int]:
    """Period start -> usage (millionths) the stored events of the row's customer report for
    the row from `since` on, read from the event log as ingest counted them."""
    increments: dict[int, int] = defaultdict(int)
    for period_us, _, micros in await reported_events(session, row, since=since):
        increments[period_us] += micros
    return increments


async def reported_events(
    session: AsyncSession, row: CustomerEntitlement, *, since: datetime
) -> list[tuple[int, int, int]]:
    """(period start, event time, usage), all in millionths or microseconds, of each stored
    event of the row's customer that counts for the row from `since` on, in stored order."""
    feature = await session.get(Feature, row.feature_id)
    if feature is None or feature.meter_id is None:
        return []
    meter = await session.get(Meter, feature.meter_id)
    if meter is None or meter.deleted_at is not None or Aggregation(meter.aggregation) not in ADDITIVE:
        return []
    compiled = compile_meter(meter)
    subjects = list(await session.scalars(select(CustomerSubject.subject_key).where(
        CustomerSubject.tenant_id == row.tenant_id, CustomerSubject.customer_id == row.customer_id)))
    if not subjects:
        return []
    target = _Target(row.id, row, False, False, dict(feature.meter_group_filter or {}), usage_period(row),
                     to_micros(row.active_from), to_micros(row.active_to) if row.active_to is not None else None)
    from_us = max(target.active_from_us, to_micros(since))
    out: list[tuple[int, int, int]] = []
    after = -1
    while True:
        found = await fetch(
            session,
            "SELECT seq, time_us, data FROM events WHERE tenant_id = $1 AND type = $2"
            f" AND {EVENT_MINUTE} >= $3 AND time_us >= $4 AND seq > $5"
            " AND subject IN (SELECT json_array_elements_text($6::json)) ORDER BY seq LIMIT $7",
            "SELECT seq, time_us, data FROM events WHERE tenant_id = ? AND type = ?"
            f" AND {EVENT_MINUTE} >= ? AND time_us >= ? AND seq > ?"
            " AND subject IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
            row.tenant_id, compiled.event_type, event_minute(from_us), from_us,
            after, codec.dumps(subjects), _PAST_CHUNK,
        )
        for seq, time_us, data in found:
            after = seq
            try:
                contribution = compiled.contribution(codec.loads(data) if data else {}, time_us)
            except DataError:
                continue  # this event cannot feed the meter; ingest skipped it too
            if contribution is not None and target.accepts(compiled, contribution.group_key, time_us):
                out.append((target.period_start(time_us), time_us, contribution.micros))
        if len(found) < _PAST_CHUNK:
            break
    return out


_PAST_CHUNK = 5_000


async def _targets(
    session: AsyncSession, tenant_id: str, meter_ids: set[str], subjects: set[str], since: datetime
) -> dict[tuple[str, str], list[_Target]]:
    """Metered entitlements of the subjects' customers on features linked to these meters."""
    # Whether standing.py must work out grants: only for customers who have some. Ended ones
    # count too: the first usage after a grant's end keeps what it had paid for.
    of_pair = (GrantRecord.tenant_id == CustomerEntitlement.tenant_id,
               GrantRecord.customer_id == CustomerEntitlement.customer_id,
               GrantRecord.feature_id == CustomerEntitlement.feature_id)
    has_grants = exists().where(*of_pair)
    has_recurring = exists().where(*of_pair, GrantRecord.recurrence_interval.is_not(None))
    carry_fixed = case(  # only rows that may carry look at their counters (standing.may_carry)
        (or_(CustomerEntitlement.overage_at_reset == standing.CARRY,
             CustomerEntitlement.reset_overage == standing.CARRY),
         select(func.max(EntitlementUsage.period_start)).where(
             EntitlementUsage.tenant_id == CustomerEntitlement.tenant_id,
             EntitlementUsage.entitlement_id == CustomerEntitlement.id,
             EntitlementUsage.carried.is_not(None),
         ).scalar_subquery()),
        else_=None,
    )
    rows = await session.execute(
        select(CustomerEntitlement, Feature.meter_id, Feature.meter_group_filter, CustomerSubject.subject_key,
               has_grants, has_recurring, carry_fixed)
        .join(Feature, Feature.id == CustomerEntitlement.feature_id)
        .join(CustomerSubject, CustomerSubject.customer_id == CustomerEntitlement.customer_id)
        .where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.kind == "metered",
            Feature.meter_id.in_(sorted(meter_ids)),
            CustomerSubject.tenant_id == tenant_id,
            CustomerSubject.subject_key.in_(sorted(subjects)),
            or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > since),
        )
    )
    out: dict[tuple[str, str], list[_Target]] = defaultdict(list)
    for ent, meter_id, group_filter, subject, granted, recurs, fixed in rows:
        out[(str(meter_id), subject)].append(
            _Target(
                ent.id,
                ent,
                bool(granted),
                bool(recurs),
                dict(group_filter or {}),
                usage_period(ent),
                to_micros(ent.active_from),
                to_micros(ent.active_to) if ent.active_to is not None else None,
                None if fixed is None else int(fixed),
            )
        )
    for targets in out.values():
        _link_successors(targets)
    return out


def _link_successors(targets: list[_Target]) -> None:
    """Point each target at the row that took over its counter mid-period, if any."""
    by_start = {(t.row.customer_id, t.row.feature_id, t.active_from_us): t for t in targets}
    for target in targets:
        if target.active_to_us is None:
            continue
        after = by_start.get((target.row.customer_id, target.row.feature_id, target.active_to_us))
        if after is not None and continues_counter(target.row, after.row):
            target.successor = after
            target.handed_over_us = to_micros(period_at(target.period, from_micros(target.active_to_us))[0])
