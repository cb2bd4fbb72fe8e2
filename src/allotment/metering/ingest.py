"""Ingest: validate -> de-duplicate -> append -> fold into rollups, in the caller's transaction.

Invariants: an event counts at most once per (tenant, source, id), forever (the unique key
decides, not a time window); only rows the database actually inserted are rolled up, so a
retried batch adds nothing; a rejected event is reported by index and the rest are kept.
The batch's minute cells go to the rollup journal in the same transaction (see folding.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Counted:
    """What one newly stored event added to one meter (for live counters downstream)."""

    meter: CompiledMeter
    subject: str
    time_us: int
    contribution: Contribution


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)
    counted: list[Counted] = field(default_factory=list)


@dataclass
class Prepared:
    """A batch validated against one version of the tenant's meters, ready to store."""

    catalogue: Catalogue
    rows: list[queries.EventRow]
    contributions: list[list[tuple[CompiledMeter, Contribution]]]  # parallel to rows
    problems: list[Problem]
    duplicates: int  # repeated within the batch itself


def prepare(decoded: Decoded, catalogue: Catalogue, *, received_us: int) -> Prepared:
    """Pure: what each event adds to each meter, and which events are refused, and why.

    Runs before the write transaction, so that on SQLite the single writer is held only for
    the statements themselves.
    """
    out = Prepared(catalogue, [], [], list(decoded.problems), 0)
    seen: set[tuple[str, str]] = set()
    for index, event in decoded.events:
        identity = (event.source, event.id)
        if identity in seen:
            out.duplicates += 1
            continue
        data = event.data or {}
        try:
            contributions = _contributions(catalogue.by_type.get(event.type, ()), data)
        except DataError as exc:
            out.problems.append(Problem(index, exc.message, exc.field))
            continue
        seen.add(identity)
        time_us = to_micros(event.time) if event.time is not None else received_us
        out.rows.append(
            (event.source, event.id, event.type, event.subject, time_us, received_us,
             codec.dumps(data) if data else None)
        )
        out.contributions.append(contributions)
    out.problems.sort(key=lambda p: p.index)
    return out


async def ingest(
    session: AsyncSession,
    tenant_id: str,
    decoded: Decoded,
    *,
    received_us: int,
    prepared: Prepared | None = None,
) -> IngestResult:
    """Store a batch in the caller's transaction. A batch prepared against meters that have
    changed since is prepared again here, so it is always counted by the meters that exist."""
    await queries.lock_tenant_shared(session, tenant_id)
    version = await meters.catalogue_version(session, tenant_id)
    if prepared is None or prepared.catalogue.version != version:
        catalogue = await meters.load_catalogue(session, tenant_id, version)
        prepared = prepare(decoded, catalogue, received_us=received_us)
    inserted = await queries.insert_events(session, tenant_id, prepared.rows)
    result = IngestResult(
        accepted=len(inserted),
        duplicates=prepared.duplicates + len(prepared.rows) - len(inserted),
        problems=prepared.problems,
    )
    fold = Fold()
    for row, contributions in zip(prepared.rows, prepared.contributions, strict=True):
        if (row[0], row[1]) in inserted:
            for meter, contribution in contributions:
                fold.add(meter.id, row[3], row[4], contribution)
                result.counted.append(Counted(meter, row[3], row[4], contribution))
    if fold.cells:
        await queries.append_journal(session, tenant_id, fold.journal_payload())
    if result.problems:
        _record_rejections(session, tenant_id, decoded, result.problems, received_us)
    return result


def _contributions(
    candidates: tuple[CompiledMeter, ...] | list[CompiledMeter], data: dict[str, object]
) -> list[tuple[CompiledMeter, Contribution]]:
    out = []
    for meter in candidates:
        contribution = meter.contribution(data)
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
