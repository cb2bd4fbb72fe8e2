"""Meter queries, answered from rollups (and the raw log only for sub-minute edges).

The window planner (`windows.py`) says which bucket width covers which part of each window;
here each width is read with one statement, aggregated over whatever the caller does not group
by, and the buckets are then assigned to windows and merged in Python.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.customers import service as customers
from allotment.db import fetch
from allotment.errors import ValidationFailed
from allotment.metering import queries
from allotment.metering.aggregation import (
    Aggregation,
    Cell,
    CompiledMeter,
    DataError,
    parse_group_key,
    result,
)
from allotment.metering.meters import compile_meter
from allotment.metering.models import EVENT_MINUTE, Meter, event_minute
from allotment.metering.rollup import read_journal
from allotment.metering.windows import (
    MINUTE_US,
    RAW,
    Segment,
    TooManyWindows,
    WindowSize,
    aligned,
    clip,
    cover,
)

SPECIAL_GROUPS = ("subject", "customer")
MAX_WINDOWS = 10_000


# Subjects or customers one query may name; beyond that, group by them instead.
MAX_FILTER_KEYS = 1000

@dataclass
class MeterQuery:
    start_us: int | None
    end_us: int
    window_size: WindowSize | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    subjects: list[str] | None = None
    customers: list[str] | None = None
    group_by: list[str] = field(default_factory=list)
    filter_group_by: dict[str, list[str]] = field(default_factory=dict)
    dense: bool = True  # ungrouped queries list every window, empty ones included


@dataclass
class Row:
    window_start_us: int
    window_end_us: int
    value: Decimal | None
    subject: str | None
    customer: str | None
    groups: dict[str, str | None]


GroupKey = tuple[int, str | None, str | None, tuple[str | None, ...]]


async def query(session: AsyncSession, tenant_id: str, meter: Meter, q: MeterQuery) -> list[Row]:
    compiled = compile_meter(meter)
    aggregation = compiled.aggregation
    for field_name, names in (("group_by", q.group_by), ("filter_group_by", q.filter_group_by)):
        for name in names:
            if name not in SPECIAL_GROUPS and name not in compiled.group_names:
                raise ValidationFailed.on(field_name, f"'{name}' is not a group of meter '{meter.key}'")
    subjects = await _subject_filter(session, tenant_id, q)
    start_us = q.start_us if q.start_us is not None else await _first_event_us(session, tenant_id, meter.event_type)
    if start_us is None:
        return []
    too_many = ValidationFailed.on(
        "window_size", f"too many {q.window_size} windows in the range; at most {MAX_WINDOWS} per query"
    )
    try:
        labels = aligned(start_us, q.end_us, q.window_size, q.tz, limit=MAX_WINDOWS)
    except TooManyWindows:
        raise too_many from None
    if len(labels) > MAX_WINDOWS:
        raise too_many
    if subjects == []:  # the filters leave no subject (a customer without any yet): every window is empty
        return _dense_rows(labels, [], aggregation) if q.dense and not q.group_by else []
    # Rows name whole windows; only the part of each within the range is counted.
    spans = clip(labels, start_us, q.end_us)
    by_width: dict[int, list[tuple[Segment, int]]] = defaultdict(list)
    for index, (lo, hi) in enumerate(spans):
        for segment in cover(lo, hi):
            by_width[segment.width_us].append((segment, index))

    # LATEST reads each subject's cells apart: see `_latest_across`.
    latest = aggregation is Aggregation.LATEST
    need_subject = latest or any(name in SPECIAL_GROUPS for name in [*q.group_by, *q.filter_group_by])
    group_names = [g for g in q.group_by if g not in SPECIAL_GROUPS]
    by_customer = "customer" in q.group_by or "customer" in q.filter_group_by
    owners = await customers.owners_of_subjects(session, tenant_id, subjects) if by_customer else {}
    cells: dict[GroupKey, Cell] = defaultdict(Cell)
    distinct: dict[GroupKey, set[str]] = defaultdict(set)
    filters = _group_filters(compiled, q.filter_group_by)

    # Rows repeat the same subject and group values across windows: resolve each pair once.
    resolved: dict[tuple[str | None, str], tuple[str | None, str | None, tuple[str | None, ...]] | None] = {}

    def resolve(subject: str | None, group_key: str) -> tuple[str | None, str | None, tuple[str | None, ...]] | None:
        values = parse_group_key(group_key)
        special = {"subject": subject, "customer": owners.get(subject or "")}
        for name, allowed in filters.items():
            if (special[name] if name in SPECIAL_GROUPS else values.get(name)) not in allowed:
                return None
        return (
            subject if "subject" in q.group_by else None,
            owners.get(subject or "") if "customer" in q.group_by else None,
            tuple(values.get(name) for name in group_names),
        )

    def key_for(window: int, subject: str | None, group_key: str) -> GroupKey | None:
        pair = (subject, group_key)
        if pair in resolved:
            found = resolved[pair]
        else:
            found = resolved[pair] = resolve(subject, group_key)
        return None if found is None else (window, *found)

    # LATEST: cells of one subject and group in a window, merged in arrival order (rollups, then
    # the journal), before they are merged with others (`_latest_across`).
    parts: dict[Any, Cell] = defaultdict(Cell)

    def part_for(window: int, subject: str | None, group_key: str) -> tuple[int, str | None, str] | None:
        return None if key_for(window, subject, group_key) is None else (window, subject, group_key)

    target: dict[Any, Cell] = parts if latest else cells
    locate: Callable[[int, str | None, str], Any] = part_for if latest else key_for

    for width_us, segments in by_width.items():
        if width_us == RAW:
            await _fold_raw(session, tenant_id, meter, segments, subjects, target, distinct, locate)
            continue
        segments.sort(key=lambda item: item[0].start_us)
        starts = [s.start_us // 1_000_000 for s, _ in segments]
        ranges = _merge_ranges([(s.start_us // 1_000_000, s.end_us // 1_000_000) for s, _ in segments])
        rows = await _read_width(
            session, tenant_id, meter.id, aggregation, width_us // 1_000_000, ranges, subjects, need_subject
        )
        for row in rows:
            bucket, subject, group_key = row[0], row[1], row[2]
            at = bisect.bisect_right(starts, bucket) - 1
            segment, window = segments[at]
            if not (segment.start_us <= bucket * 1_000_000 < segment.end_us):
                continue
            key = locate(window, subject, group_key)
            if key is None:
                continue
            if aggregation is Aggregation.UNIQUE_COUNT:
                distinct[key].add(row[3])
            elif aggregation is Aggregation.SUM:  # tens of thousands of rows: add in place
                cell = cells[key]
                cell.n += 1
                cell.total += int(row[3])
            elif aggregation is Aggregation.COUNT:
                cells[key].n += int(row[3])
            else:
                target[key].merge(_cell_from(aggregation, row[3:]))

    await _fold_journal(session, tenant_id, meter.id, by_width, subjects, target, distinct, locate)
    for (window, subject, group_key), part in parts.items():
        row_key = key_for(window, subject, group_key)
        assert row_key is not None  # `part_for` kept only the parts that have one
        _latest_across(cells[row_key], part)
    keys: list[GroupKey] = list(set(cells) | set(distinct) if aggregation is Aggregation.UNIQUE_COUNT else cells)
    dense = q.dense and not q.group_by
    if not dense:  # window, subject, customer, group values: on the keys, before any row exists
        keys.sort(key=lambda k: (k[0], k[1] or "", k[2] or "", tuple(v or "" for v in k[3])))
    empty = Cell()
    out = [
        Row(
            labels[k[0]][0],
            labels[k[0]][1],
            result(aggregation, cells.get(k, empty), distinct.get(k)),
            k[1],
            k[2],
            dict(zip(group_names, k[3], strict=True)) if group_names else {},
        )
        for k in keys
    ]
    return _dense_rows(labels, out, aggregation) if dense else out


def _latest_across(cell: Cell, part: Cell) -> None:
    """Merge the LATEST cell of one subject and group into a row's: of values at the same time,
    the greatest. Arrival decides between events of one subject and group only: rollups keep
    no order of arrival across them, and a rule that needs none gives one answer whether the
    rollups, the journal or the log hold the events."""
    if part.n == 0 or part.last_us is None or part.last_value is None:
        return
    cell.n += part.n
    if cell.last_us is None or cell.last_value is None or (part.last_us, part.last_value) > (cell.last_us, cell.last_value):
        cell.last_us, cell.last_value = part.last_us, part.last_value


def _group_filters(compiled: CompiledMeter, filter_group_by: dict[str, list[str]]) -> dict[str, set[str]]:
    """The values each group filter accepts, as the meter's group keys hold them: a long value
    in its bounded form (metering/bounded.py). As given too, for cells folded before values
    were bounded (SQLite kept long ones as they were)."""
    return {
        name: set(allowed) if name in SPECIAL_GROUPS else {*allowed, *map(compiled.group_value_form, allowed)}
        for name, allowed in filter_group_by.items()
    }


def _dense_rows(labels: list[tuple[int, int]], rows: list[Row], aggregation: Aggregation) -> list[Row]:
    have = {r.window_start_us: r for r in rows}
    empty = result(aggregation, Cell(), set())
    return [have.get(lo) or Row(lo, hi, empty, None, None, {}) for lo, hi in labels]


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


_MEASURES = {
    Aggregation.SUM: ("SUM(total)", "SUM(total)"),
    Aggregation.COUNT: ("SUM(n)", "SUM(n)"),
    Aggregation.AVG: ("SUM(n), SUM(total)", "SUM(n), SUM(total)"),
    Aggregation.MIN: ("MIN(lo)", "MIN(lo)"),
    Aggregation.MAX: ("MAX(hi)", "MAX(hi)"),
    # The value of the row with the latest time: SQLite takes bare columns from the max() row.
    Aggregation.LATEST: (
        "MAX(last_us), (array_agg(last_value ORDER BY last_us DESC))[1]",
        "MAX(last_us), last_value",
    ),
}


def _cell_from(aggregation: Aggregation, measures: Any) -> Cell:
    cell = Cell(n=1)
    if aggregation is Aggregation.SUM:
        cell.total = int(measures[0])
    elif aggregation is Aggregation.COUNT:
        cell.n = int(measures[0])
    elif aggregation is Aggregation.AVG:
        cell.n, cell.total = int(measures[0]), int(measures[1])
    elif aggregation is Aggregation.MIN:
        cell.lo = int(measures[0])
    elif aggregation is Aggregation.MAX:
        cell.hi = int(measures[0])
    else:
        cell.last_us, cell.last_value = int(measures[0]), int(measures[1])
    return cell


async def _read_width(
    session: AsyncSession,
    tenant_id: str,
    meter_id: str,
    aggregation: Aggregation,
    width: int,
    ranges: list[tuple[int, int]],
    subjects: list[str] | None,
    need_subject: bool,
) -> list[Any]:
    table = "rollup_distinct" if aggregation is Aggregation.UNIQUE_COUNT else "rollups"
    subject_col = "subject" if need_subject else "NULL"
    if aggregation is Aggregation.UNIQUE_COUNT:
        measures = ("value", "value")
        grouping = "DISTINCT"
    else:
        measures = _MEASURES[aggregation]
        grouping = ""
    args: list[Any] = [tenant_id, meter_id, width]
    pg_where, lite_where = [], []
    for lo, hi in ranges:
        args += [lo, hi]
        pg_where.append(f"(bucket >= ${len(args) - 1} AND bucket < ${len(args)})")
        lite_where.append("(bucket >= ? AND bucket < ?)")
    subject_pg = subject_lite = ""
    if subjects is not None:
        # One parameter however many subjects: each database caps a statement's parameters.
        args.append(codec.dumps(subjects))
        subject_pg = f" AND subject IN (SELECT json_array_elements_text(${len(args)}::json))"
        subject_lite = " AND subject IN (SELECT value FROM json_each(?))"
    group = "" if grouping else f" GROUP BY bucket, {'subject, ' if need_subject else ''}group_key"

    def sql(measure: str, where: list[str], subject_sql: str, p: tuple[str, str, str]) -> str:
        return (
            f"SELECT {grouping} bucket, {subject_col}, group_key, {measure} FROM {table}"
            f" WHERE tenant_id = {p[0]} AND meter_id = {p[1]} AND width = {p[2]}"
            f" AND ({' OR '.join(where)}){subject_sql}{group}"
        )

    return await fetch(
        session,
        sql(measures[0], pg_where, subject_pg, ("$1", "$2", "$3")),
        sql(measures[1], lite_where, subject_lite, ("?", "?", "?")),
        *args,
    )


async def _fold_journal(
    session: AsyncSession,
    tenant_id: str,
    meter_id: str,
    by_width: dict[int, list[tuple[Segment, int]]],
    subjects: list[str] | None,
    cells: dict[GroupKey, Cell],
    distinct: dict[GroupKey, set[str]],
    key_for: Any,
) -> None:
    """Batches acknowledged but not yet folded: their minute cells count where a bucket
    segment covers them (sub-minute edges already came from the event log itself)."""
    payloads = await queries.pending_journal(session, tenant_id)
    if not payloads:
        return
    segments = sorted(
        (item for width, items in by_width.items() if width != RAW for item in items),
        key=lambda item: item[0].start_us,
    )
    starts = [segment.start_us for segment, _ in segments]
    wanted = set(subjects) if subjects is not None else None

    def target(subject: str, group_key: str, minute: int) -> GroupKey | None:
        if wanted is not None and subject not in wanted:
            return None
        at = bisect.bisect_right(starts, minute * 1_000_000) - 1
        if at < 0 or not (minute * 1_000_000 + MINUTE_US <= segments[at][0].end_us):
            return None
        return key_for(segments[at][1], subject, group_key)  # type: ignore[no-any-return]

    for payload in payloads:
        journal_cells, tokens = read_journal(payload)
        for jc in journal_cells:
            if jc[0] == meter_id and (key := target(jc[1], jc[2], jc[3])) is not None:
                cells[key].absorb(*jc[4:])
        for token_meter, subject, group_key, minute, token in tokens:
            if token_meter == meter_id and (key := target(subject, group_key, minute)) is not None:
                distinct[key].add(token)


async def _fold_raw(
    session: AsyncSession,
    tenant_id: str,
    meter: Meter,
    segments: list[tuple[Segment, int]],
    subjects: list[str] | None,
    cells: dict[GroupKey, Cell],
    distinct: dict[GroupKey, set[str]],
    key_for: Any,
) -> None:
    """Sub-minute edges of a window, read from the event log and folded like ingest does."""
    compiled = compile_meter(meter)
    for segment, window in segments:
        rows = await fetch(
            session,
            "SELECT subject, time_us, data FROM events WHERE tenant_id = $1 AND type = $2"
            f" AND {EVENT_MINUTE} BETWEEN $3 AND $4 AND time_us >= $5 AND time_us < $6 ORDER BY time_us, seq",
            "SELECT subject, time_us, data FROM events WHERE tenant_id = ? AND type = ?"
            f" AND {EVENT_MINUTE} BETWEEN ? AND ? AND time_us >= ? AND time_us < ? ORDER BY time_us, seq",
            tenant_id,
            meter.event_type,
            event_minute(segment.start_us),
            event_minute(segment.end_us - 1),
            segment.start_us,
            segment.end_us,
        )
        for subject, time_us, data in rows:
            if subjects is not None and subject not in subjects:
                continue
            try:
                contribution = compiled.contribution(codec.loads(data) if data else {}, time_us)
            except DataError:
                continue
            if contribution is None:
                continue
            key = key_for(window, subject, contribution.group_key)
            if key is None:
                continue
            if contribution.token is not None:
                distinct[key].add(contribution.token)
            cell = Cell()
            cell.add(contribution.micros, time_us)
            cells[key].merge(cell)


async def _subject_filter(session: AsyncSession, tenant_id: str, q: MeterQuery) -> list[str] | None:
    """None means every subject; customers are resolved to the subjects they own. Filters
    combine: subjects and customers both named leave the named subjects of those customers."""
    if q.customers is None:
        return None if q.subjects is None else sorted(set(q.subjects))
    owned = set(await customers.subjects_of(session, tenant_id, q.customers))
    return sorted(owned if q.subjects is None else owned & set(q.subjects))


def _first_event_sql(tenant: str, type_: str) -> str:
    """The earliest time within the earliest minute: both read from the index by minute."""
    return (f"SELECT MIN(time_us) FROM events WHERE tenant_id = {tenant} AND type = {type_} AND {EVENT_MINUTE} ="
            f" (SELECT MIN({EVENT_MINUTE}) FROM events WHERE tenant_id = {tenant} AND type = {type_})")


_FIRST_EVENT_PG, _FIRST_EVENT_SQLITE = _first_event_sql("$1", "$2"), _first_event_sql("?1", "?2")


async def _first_event_us(session: AsyncSession, tenant_id: str, event_type: str) -> int | None:
    """Where a query without `from` starts: the earliest stored event of the meter's type."""
    rows = await fetch(session, _FIRST_EVENT_PG, _FIRST_EVENT_SQLITE, tenant_id, event_type)
    first = rows[0][0] if rows else None
    return None if first is None else int(first)
