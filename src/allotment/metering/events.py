"""Reading the event log back: recent events with their attribution, and rejected ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Select, exists, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.customers import service as customers
from allotment.metering.aggregation import DataError
from allotment.metering.meters import compiled_by_type
from allotment.metering.models import EVENT_MINUTE, Event, EventRepeat, RejectedEvent, event_minute
from allotment.metering.queries import events_of_tenant
from allotment.types import from_micros


@dataclass
class EventView:
    event: Event
    data: dict[str, Any] | None
    customer: str | None
    meters: list[str]
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # what meters of its type could not read
    repeat: EventRepeat | None = None  # later arrivals of the same identity, if any

    @property
    def status(self) -> str:
        return "counted" if self.meters and self.customer else "unattributed"


@dataclass
class EventFilter:
    subjects: list[str] | None = None
    customers: list[str] | None = None
    type: str | None = None
    start_us: int | None = None
    end_us: int | None = None
    status: str | None = None  # counted | unattributed | duplicate (arrived more than once)
    before_seq: int | None = None


@dataclass
class EventPage:
    views: list[EventView]
    next_before_seq: int | None  # where the next page starts; None: the list is at its end


async def list_events(
    session: AsyncSession, tenant_id: str, flt: EventFilter, *, limit: int
) -> list[EventView]:
    """Newest first. Status filters are applied after attribution, scanning at most 20 pages."""
    return (await list_events_page(session, tenant_id, flt, limit=limit)).views


async def list_events_page(
    session: AsyncSession, tenant_id: str, flt: EventFilter, *, limit: int
) -> EventPage:
    """`list_events`, and where its next page starts. A status filter is applied after
    attribution, scanning at most 20 pages of the log: when those hold fewer matches than
    `limit`, the page is short and the next one starts after the last event scanned."""
    stmt = await _selected(session, tenant_id, flt, newest_first=True)
    attributed = flt.status in ("counted", "unattributed")  # known only after attribution
    if flt.status == "duplicate":
        stmt = stmt.where(exists().where(
            EventRepeat.tenant_id == Event.tenant_id, EventRepeat.source == Event.source,
            EventRepeat.event_id == Event.event_id,
        ))
    by_type = await compiled_by_type(session, tenant_id)
    out: list[EventView] = []
    before = flt.before_seq
    scanned_all = False
    for _ in range(20):
        page_stmt = stmt if before is None else stmt.where(Event.seq < before)
        page = list(await session.scalars(page_stmt.order_by(Event.seq.desc()).limit(limit)))
        scanned_all = len(page) < limit
        if not page:
            break
        owners = await customers.owners_of_subjects(session, tenant_id, sorted({e.subject for e in page}))
        repeats = await _repeats_of(session, tenant_id, page)
        for event in page:
            view = _attribute(event, owners.get(event.subject), by_type)
            view.repeat = repeats.get((event.source, event.event_id))
            if not attributed or view.status == flt.status:
                out.append(view)
        before = page[-1].seq
        if len(out) >= limit or scanned_all:
            break
    if len(out) >= limit:
        return EventPage(out[:limit], out[limit - 1].event.seq)
    # Short: the log is at its end, or the scan stopped first and the next page goes on from it.
    return EventPage(out, None if scanned_all else before)


async def _selected(
    session: AsyncSession, tenant_id: str, flt: EventFilter, *, newest_first: bool = False
) -> Select[Event]:
    """The tenant's stored events that the filter's subjects, customers, type and times select."""
    subjects = set(flt.subjects or ())
    if flt.customers is not None:
        subjects |= set(await customers.subjects_of(session, tenant_id, flt.customers))
    by_index = flt.type is not None or flt.start_us is not None or flt.end_us is not None
    stmt = select(Event).where(events_of_tenant(session, tenant_id, newest_first=newest_first and not by_index))
    if flt.subjects is not None or flt.customers is not None:
        stmt = stmt.where(Event.subject.in_(sorted(subjects)))
    if flt.type:
        stmt = stmt.where(Event.type == flt.type)
    minute = literal_column(EVENT_MINUTE, BigInteger())  # what the index on (tenant, type, minute) holds
    if flt.start_us is not None:
        stmt = stmt.where(Event.time_us >= flt.start_us, minute >= event_minute(flt.start_us))
    if flt.end_us is not None:
        stmt = stmt.where(Event.time_us < flt.end_us, minute <= event_minute(flt.end_us - 1))
    return stmt


async def last_seq(session: AsyncSession, tenant_id: str) -> int:
    """Where the tenant's event log ends now: every event acknowledged so far is at or before it."""
    return int(await session.scalar(select(func.max(Event.seq)).where(Event.tenant_id == tenant_id)) or 0)


async def log_page(
    session: AsyncSession, tenant_id: str, flt: EventFilter, *, after_seq: int, through_seq: int, limit: int
) -> list[Event]:
    """The next events of the log in the order they were stored, after `after_seq` and up to
    `through_seq`, that the filter selects (each identity once: duplicates are not stored)."""
    stmt = (await _selected(session, tenant_id, flt)).where(Event.seq > after_seq, Event.seq <= through_seq)
    return list(await session.scalars(stmt.order_by(Event.seq).limit(limit)))


async def _repeats_of(
    session: AsyncSession, tenant_id: str, page: list[Event]
) -> dict[tuple[str, str], EventRepeat]:
    # One IN per key column, not a row-value IN: SQLite looks row values up by scanning the
    # tenant's whole repeat table, but each key of an IN on every column through the index. The
    # few rows of other pairs it may also find are never asked for.
    rows = await session.scalars(select(EventRepeat).where(
        EventRepeat.tenant_id == tenant_id,
        EventRepeat.source.in_(sorted({e.source for e in page})),
        EventRepeat.event_id.in_(sorted({e.event_id for e in page})),
    ))
    return {(r.source, r.event_id): r for r in rows}


def _instant(time_us: int) -> str:
    return from_micros(time_us).isoformat().replace("+00:00", "Z")


def _attribute(event: Event, owner: str | None, by_type: dict[str, Any]) -> EventView:
    data = codec.loads(event.data) if event.data else None
    view = EventView(event, data, owner, [])
    left_out = []
    for meter in by_type.get(event.type, ()):
        try:
            if meter.contribution(data or {}, event.time_us) is not None:
                view.meters.append(meter.key)
            elif meter.event_from_us is not None and event.time_us < meter.event_from_us:
                left_out.append(f"meter '{meter.key}' counts events from {_instant(meter.event_from_us)}")
            else:
                left_out.append(f"the filters of meter '{meter.key}' leave it out")
        except DataError as exc:
            view.unreadable.append(f"{exc.field} {exc.message}")
    view.problems.extend(view.unreadable)
    if not view.meters:  # else it counts, and the meters that leave it out are no problem
        view.problems.extend(left_out)
    if not by_type.get(event.type):
        view.problems.append(f"no meter counts events of type '{event.type}'")
    if owner is None:
        view.problems.append(f"subject '{event.subject}' belongs to no customer")
    return view


async def find_event(session: AsyncSession, tenant_id: str, *, source: str, event_id: str) -> EventView | None:
    """The stored event with this identity, attributed as the listing does; None if none is."""
    event = await session.scalar(select(Event).where(
        Event.tenant_id == tenant_id, Event.source == source, Event.event_id == event_id
    ))
    if event is None:
        return None
    owners = await customers.owners_of_subjects(session, tenant_id, [event.subject])
    return _attribute(event, owners.get(event.subject), await compiled_by_type(session, tenant_id))


_IN_CHUNK = 10_000


async def find_events(
    session: AsyncSession, tenant_id: str, *, source: str, event_ids: list[str]
) -> dict[str, EventView]:
    """The stored events with these ids under `source`, by id, attributed as the listing does;
    ids stored under none are left out."""
    found: list[Event] = []
    for i in range(0, len(event_ids), _IN_CHUNK):  # each database caps a statement's parameters
        found += await session.scalars(select(Event).where(
            Event.tenant_id == tenant_id, Event.source == source, Event.event_id.in_(event_ids[i : i + _IN_CHUNK])
        ))
    owners = await customers.owners_of_subjects(session, tenant_id, sorted({e.subject for e in found}))
    by_type = await compiled_by_type(session, tenant_id)
    return {e.event_id: _attribute(e, owners.get(e.subject), by_type) for e in found}


async def list_rejected(
    session: AsyncSession, tenant_id: str, *, limit: int, before_seq: int | None = None
) -> list[RejectedEvent]:
    """Newest first; `before_seq` continues after the last row of the previous page."""
    stmt = select(RejectedEvent).where(RejectedEvent.tenant_id == tenant_id)
    if before_seq is not None:
        stmt = stmt.where(RejectedEvent.seq < before_seq)
    return list(await session.scalars(stmt.order_by(RejectedEvent.seq.desc()).limit(limit)))
