"""Ingest: validate -> de-duplicate -> append -> fold into rollups, in the caller's transaction.

Invariants: an event counts at most once per (tenant, source, id), forever (the unique key
decides, not a time window); only rows the database actually inserted are rolled up, so a
retried batch adds nothing; a rejected event is reported by index and the rest are kept.
The minute cells of what was stored go to the rollup journal in the same transaction (see
folding.py).

The work that does not need the database is done before the write transaction, in `prepare`:
decoding, validation, what each event adds to each meter, and the batch's minute cells as if
every event were new. Inside the transaction, the batches stored together are one insert
statement and one journal row; a batch whose events all turned out new contributes its
prepared cells, and only a batch with duplicates is folded again from its new rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.errors import Problem
from allotment.metering import meters, queries
from allotment.metering.aggregation import CompiledMeter, Contribution, DataError
from allotment.metering.meters import Catalogue
from allotment.metering.models import RejectedEvent
from allotment.metering.rollup import Fold
from allotment.metering.wire import CloudEvent, Decoded
from allotment.types import to_micros

_RAW_KEPT = 4096  # characters of a rejected event kept for operators


class Counted(NamedTuple):
    """What one newly stored event added to one meter (for live counters downstream).

    A tuple: one is built per stored event and meter, and a frozen dataclass would set each
    field through `object.__setattr__`."""

    meter: CompiledMeter
    subject: str
    time_us: int
    contribution: Contribution


@dataclass
class Prepared:
    """A batch validated against one version of the tenant's meters, ready to store."""

    catalogue: Catalogue
    rows: list[queries.EventRow]
    contributions: list[list[tuple[CompiledMeter, Contribution]]]  # parallel to rows
    problems: list[Problem]
    repeats: list[tuple[str, str]]  # identities (source, id) sent again within the batch itself
    fold: Fold = field(default_factory=Fold)  # minute cells of every row; never changed once made


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)
    stored: Prepared | None = None
    new_rows: list[int] | None = None  # indexes into stored.rows; None: every row was new

    def counted(self, meter_ids: set[str] | None = None) -> Iterator[Counted]:
        """What the events this batch newly stored added to the meters (all, or `meter_ids`)."""
        if self.stored is None or self.accepted == 0:
            return
        rows, contributions = self.stored.rows, self.stored.contributions
        indexes: Sequence[int] = range(len(rows)) if self.new_rows is None else self.new_rows
        for i in indexes:
            row = rows[i]
            for meter, contribution in contributions[i]:
                if meter_ids is None or meter.id in meter_ids:
                    yield Counted(meter, row[3], row[4], contribution)


@dataclass(frozen=True)
class Batch:
    """One request's events, decoded (and prepared, if the catalogue was at hand)."""

    decoded: Decoded
    received_us: int
    prepared: Prepared | None = None
    keep_unreadable: bool = False  # see `prepare`


def prepare(
    decoded: Decoded, catalogue: Catalogue, *, received_us: int, keep_unreadable: bool = False
) -> Prepared:
    """Pure: what each event adds to each meter, and which events are refused, and why.

    An event whose data a meter cannot read (a value property missing or not a number) is
    refused, unless `keep_unreadable`: then it is stored, counted by the meters that can read
    it and by no other, as OpenMeter does; the event listing names what each meter could not
    read. Runs before the write transaction, so that on SQLite the single writer is held only
    for the statements themselves.
    """
    out = Prepared(catalogue, [], [], list(decoded.problems), [])
    seen: set[tuple[str, str]] = set()
    fold = out.fold
    for index, event in decoded.events:
        identity = (event.source, event.id)
        if identity in seen:
            out.repeats.append(identity)
            continue
        data = event.data or {}
        time_us = to_micros(event.time) if event.time is not None else received_us
        try:
            contributions = _contributions(catalogue.by_type.get(event.type, ()), data, time_us, keep_unreadable)
        except DataError as exc:
            out.problems.append(Problem(index, exc.message, exc.field))
            continue
        seen.add(identity)
        out.rows.append(
            (event.source, event.id, event.type, event.subject, time_us, received_us,
             codec.dumps(data) if data else None)
        )
        out.contributions.append(contributions)
        for meter, contribution in contributions:
            fold.add(meter.id, event.subject, time_us, contribution)
    out.problems.sort(key=lambda p: p.index)
    return out


async def ingest(
    session: AsyncSession, tenant_id: str, batches: Sequence[Batch]
) -> list[IngestResult]:
    """Store batches of one tenant in the caller's transaction, answering each on its own.

    A batch prepared against meters that have changed since is prepared again here, so it is
    always counted by the meters that exist. An event sent in two of the batches is stored
    once, as new in the first and as a duplicate in the later one.
    """
    await queries.lock_tenant_shared(session, tenant_id)
    version = await meters.catalogue_version(session, tenant_id)
    catalogue: Catalogue | None = None
    prepared: list[Prepared] = []
    for batch in batches:
        if batch.prepared is not None and batch.prepared.catalogue.version == version:
            prepared.append(batch.prepared)
            continue
        if catalogue is None:
            catalogue = await meters.load_catalogue(session, tenant_id, version)
        prepared.append(prepare(batch.decoded, catalogue, received_us=batch.received_us,
                                keep_unreadable=batch.keep_unreadable))
    rows = [row for p in prepared for row in p.rows]
    inserted = await queries.insert_events(session, tenant_id, rows)  # None: every row was new
    fold = Fold()
    results = []
    again: dict[tuple[str, str], tuple[int, int]] = {}  # identity -> duplicates, last received
    for batch, p in zip(batches, prepared, strict=True):
        result = IngestResult(problems=p.problems, stored=p)
        if inserted is None:  # then no identity repeats across batches either
            fold.merge(p.fold)
            repeated: list[tuple[str, str]] = p.repeats
        else:
            result.new_rows = _claim(p, inserted)
            for i in result.new_rows:
                row = p.rows[i]
                for meter, contribution in p.contributions[i]:
                    fold.add(meter.id, row[3], row[4], contribution)
            new = set(result.new_rows)
            repeated = p.repeats + [p.rows[i][:2] for i in range(len(p.rows)) if i not in new]
        for identity in repeated:
            count, last = again.get(identity, (0, 0))
            again[identity] = (count + 1, max(last, batch.received_us))
        result.accepted = len(p.rows) if result.new_rows is None else len(result.new_rows)
        result.duplicates = len(p.repeats) + len(p.rows) - result.accepted
        if p.problems:
            _record_rejections(session, tenant_id, batch.decoded, p.problems, batch.received_us)
        results.append(result)
    if fold.cells:
        await queries.append_journal(session, tenant_id, fold.journal_payload())
    if again:
        await queries.record_duplicates(session, tenant_id, again)
    return results


def _claim(prepared: Prepared, inserted: set[tuple[str, str]]) -> list[int]:
    """The rows of this batch that the insert stored, each claimed by the first batch sending it."""
    new = []
    for i, row in enumerate(prepared.rows):
        identity = (row[0], row[1])
        if identity in inserted:
            inserted.discard(identity)
            new.append(i)
    return new


def _contributions(
    candidates: tuple[CompiledMeter, ...] | list[CompiledMeter], data: dict[str, object], time_us: int,
    skip_unreadable: bool,
) -> list[tuple[CompiledMeter, Contribution]]:
    out = []
    for meter in candidates:
        try:
            contribution = meter.contribution(data, time_us)
        except DataError:
            if skip_unreadable:
                continue
            raise
        if contribution is not None:
            out.append((meter, contribution))
    return out


def _record_rejections(
    session: AsyncSession,
    tenant_id: str,
    decoded: Decoded,
    problems: list[Problem],
    received_us: int,
) -> None:
    by_index: dict[int, CloudEvent] = dict(decoded.events)
    for problem in problems:
        if decoded.raw is not None and problem.index < len(decoded.raw):
            raw = codec.dumps(decoded.raw[problem.index])
        elif problem.index in by_index:
            raw = msgspec.json.encode(by_index[problem.index]).decode()
        else:
            raw = ""
        session.add(
            RejectedEvent(
                tenant_id=tenant_id,
                received_us=received_us,
                batch_index=problem.index,
                field=problem.field,
                reason=problem.reason[:1024],
                raw=raw[:_RAW_KEPT],
            )
        )
