"""Meter queries over HTTP agree with a naive reference over the de-duplicated events.

Each example gets its own meter and event type in the test's tenant, sends random events in
random batches (out of order, late, with re-sent ids and retried batches, the rollup journal
folded after some of them) and compares random queries (edges inside a minute, DST-crossing
windows, groups and filters) value by value.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.metering.reference import (
    DAY_US,
    HOUR_US,
    MINUTE_US,
    Sent,
    aggregate,
    first_arrivals,
    naive_aligned_windows,
    us,
)

from allotment.db import Database
from allotment.metering.folding import fold_pending

AGGREGATIONS = ["SUM", "COUNT", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST"]
SUBJECTS = ["alice", "bob", "carol"]
REGIONS = ["eu", "us", "ap"]
# Three days of events around a clock change in the zone the windows are drawn in.
SCENES = [
    (datetime(2026, 3, 7, tzinfo=UTC), "America/New_York"),  # springs forward 2026-03-08
    (datetime(2026, 10, 24, tzinfo=UTC), "Europe/Berlin"),  # falls back 2026-10-25
]
SPAN_US = 3 * DAY_US
# No shrinking: each step would replay HTTP round trips for minutes. A failure prints its draws
# and is replayed first on the next run.
EXAMPLES = settings(
    max_examples=20,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_examples = itertools.count()

numbers = st.decimals(-1000, 1000, places=6, allow_nan=False, allow_infinity=False)
distinct_values: st.SearchStrategy[str | int] = st.sampled_from(["a", "b", "c", "d", 1, 2, 3])
offsets = st.one_of(
    st.integers(0, SPAN_US - 1),
    st.integers(0, SPAN_US // MINUTE_US - 1).map(lambda m: m * MINUTE_US),  # on a minute edge
)


def iso(at_us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us)).isoformat()


def value_of(aggregation: str, draw: st.DrawFn) -> Decimal | str | int | None:
    if aggregation == "COUNT":
        return None
    if aggregation == "UNIQUE_COUNT":
        return draw(distinct_values)
    return draw(numbers)


def fresh_event(draw: st.DrawFn, aggregation: str, event_id: str, base_us: int) -> Sent:
    subject, region = draw(st.sampled_from(SUBJECTS)), draw(st.sampled_from([*REGIONS, None]))
    return Sent(event_id, subject, region, base_us + draw(offsets), value_of(aggregation, draw))


def with_ties(draw: st.DrawFn, events: list[Sent]) -> list[Sent]:
    """Some events share a time with an earlier one of the same subject and group (LATEST then
    goes by arrival), some with one of another subject or group (LATEST then takes the greater)."""
    out: list[Sent] = []
    for event in events:
        cell = (event.subject, event.group)
        same = [e for e in out if (e.subject, e.group) == cell]
        time_us = event.time_us
        tie = draw(st.integers(0, 5))
        if same and tie == 0:
            time_us = draw(st.sampled_from(same)).time_us
        elif out and tie == 1:
            time_us = draw(st.sampled_from(out)).time_us
        out.append(Sent(event.id, event.subject, event.group, time_us, event.value))
    return out


@st.composite
def sends(draw: st.DrawFn, aggregation: str, prefix: str, base_us: int) -> list[list[Sent]]:
    """Batches in arrival order: new events, re-sent ids with other data, and retried batches."""
    count = draw(st.integers(1, 24))
    stream = with_ties(draw, [fresh_event(draw, aggregation, f"{prefix}-{i}", base_us) for i in range(count)])
    for _ in range(draw(st.integers(0, 4))):  # an id sent again, later, with different data
        original = draw(st.integers(0, len(stream) - 1))
        again = fresh_event(draw, aggregation, stream[original].id, base_us)
        stream.insert(draw(st.integers(original + 1, len(stream))), again)
    batches: list[list[Sent]] = []
    while stream:
        size = draw(st.integers(1, 8))
        batches.append(stream[:size])
        stream = stream[size:]
        if draw(st.integers(0, 6)) == 0:
            batches.append(list(draw(st.sampled_from(batches))))  # a retried batch
    return batches


def cloud_event(event: Sent, event_type: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if event.group is not None:
        data["region"] = event.group
    if isinstance(event.value, Decimal):
        as_text = sum(map(ord, event.id)) % 2  # numeric strings are accepted too
        data["value"] = str(event.value) if as_text else float(event.value)
    elif event.value is not None:
        data["value"] = event.value
    return {"specversion": "1.0", "id": event.id, "source": "props", "type": event_type,
            "subject": event.subject, "time": iso(event.time_us), "data": data}


@st.composite
def queries(draw: st.DrawFn, base_us: int, zone: str) -> dict[str, Any]:
    size = draw(st.sampled_from([None, "MINUTE", "HOUR", "DAY", "MONTH"]))
    start = base_us + draw(st.integers(-HOUR_US, SPAN_US))
    if draw(st.booleans()):
        start -= start % MINUTE_US
    length = draw(st.integers(1, 3 * HOUR_US if size == "MINUTE" else SPAN_US + HOUR_US))
    body: dict[str, Any] = {
        "from": iso(start),
        "to": iso(start + length),
        "window_size": size,
        "window_time_zone": draw(st.sampled_from([zone, zone, "UTC", "Asia/Kathmandu"])),
        "group_by": draw(st.sampled_from([[], ["subject"], ["region"], ["subject", "region"]])),
    }
    if draw(st.booleans()):
        body["subject"] = draw(st.lists(st.sampled_from([*SUBJECTS, "nobody"]), min_size=1, unique=True))
    choice = draw(st.sampled_from(["none", "region", "subject"]))
    if choice != "none":
        values = REGIONS if choice == "region" else SUBJECTS
        body["filter_group_by"] = {choice: draw(st.lists(st.sampled_from(values), min_size=1, unique=True))}
    return body


RowKey = tuple[int, int, str | None, tuple[tuple[str, str | None], ...]]


def expected(aggregation: str, kept: list[Sent], body: dict[str, Any]) -> dict[RowKey, Decimal | None]:
    """What the query should answer, from the kept events alone."""
    start, end = us(datetime.fromisoformat(body["from"])), us(datetime.fromisoformat(body["to"]))
    by_subject, by_region = "subject" in body["group_by"], "region" in body["group_by"]
    wanted = body.get("filter_group_by", {})
    chosen = [
        e for e in kept
        if e.subject in body.get("subject", [e.subject])
        and e.subject in wanted.get("subject", [e.subject])
        and ("region" not in wanted or e.group in wanted["region"])
    ]
    # Filtered by one subject, every row names it (grouped by subject or not).
    only = body["subject"][0] if len(set(body.get("subject", []))) == 1 else None
    # Rows name whole windows; only the events within [from, to) count.
    out: dict[RowKey, Decimal | None] = {}
    for lo, hi in naive_aligned_windows(start, end, body["window_size"], ZoneInfo(body["window_time_zone"])):
        groups: dict[RowKey, list[Sent]] = defaultdict(list)
        if not body["group_by"]:
            groups[(lo, hi, only, ())] = []
        for e in chosen:
            if max(lo, start) <= e.time_us < min(hi, end):
                key = (lo, hi, e.subject if by_subject else only, (("region", e.group),) if by_region else ())
                groups[key].append(e)
        out.update({key: aggregate(aggregation, events) for key, events in groups.items()})
    return out


def answered(rows: list[dict[str, Any]]) -> dict[RowKey, Any]:
    out = {}
    for row in rows:
        key = (
            us(datetime.fromisoformat(row["window_start"])),
            us(datetime.fromisoformat(row["window_end"])),
            row["subject"],
            tuple(sorted(row["group_by"].items())),
        )
        assert key not in out, f"two rows for {key}"
        out[key] = row["value"]
    return out


def assert_agrees(aggregation: str, got: dict[RowKey, Any], want: dict[RowKey, Decimal | None]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        elif aggregation == "AVG":  # a quotient: exact to 28 digits, then the nearest double
            assert math.isclose(got[key], float(value), rel_tol=1e-12), key
        else:  # integers stay integers; others are the nearest double of the exact decimal
            assert got[key] == (int(value) if value == value.to_integral_value() else float(value)), key


async def create_meter(tenant: Any, key: str, event_type: str, aggregation: str) -> None:
    body: dict[str, Any] = {"key": key, "event_type": event_type, "aggregation": aggregation,
                            "group_by": {"region": "$.region"}}
    if aggregation != "COUNT":
        body["value_property"] = "$.value"
    resp = await tenant.client.post("/v1/meters", json=body)
    assert resp.status_code == 201, resp.text


async def send(
    tenant: Any, db: Database, batches: list[list[Sent]], folds: list[bool], event_type: str
) -> None:
    """Post the batches; after some, fold the journal, so queries read rollups and journal mixed."""
    for batch, fold in zip(batches, folds, strict=True):
        resp = await tenant.client.post("/v1/events", json=[cloud_event(e, event_type) for e in batch])
        assert resp.status_code == 200 and resp.json()["rejected"] == 0, resp.text
        if fold:
            async with db.transaction() as session:
                await fold_pending(session)


async def answer(tenant: Any, key: str, body: dict[str, Any]) -> dict[RowKey, Any]:
    resp = await tenant.client.post(f"/v1/meters/{key}/query", json=body)
    assert resp.status_code == 200, resp.text
    return answered(resp.json()["data"])


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@EXAMPLES
@given(data=st.data())
async def test_query_matches_naive_reference(
    tenant: Any, db: Database, aggregation: str, data: st.DataObject
) -> None:
    """Every window, group and filter gives the value computed naively from the kept events."""
    n = next(_examples)
    base, zone = data.draw(st.sampled_from(SCENES))
    base_us = us(base)
    await create_meter(tenant, f"m{n}", f"t{n}", aggregation)
    batches = data.draw(sends(aggregation, f"e{n}", base_us))
    folds = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    await send(tenant, db, batches, folds, f"t{n}")
    kept = first_arrivals([e for batch in batches for e in batch])
    for body in data.draw(st.lists(queries(base_us, zone), min_size=1, max_size=3)):
        assert_agrees(aggregation, await answer(tenant, f"m{n}", body), expected(aggregation, kept, body))


@EXAMPLES
@given(data=st.data())
async def test_meter_created_after_the_events_answers_like_one_created_before(
    tenant: Any, db: Database, data: st.DataObject
) -> None:
    """A backfilled meter gives the same answers as a meter that saw the events arrive."""
    n = next(_examples)
    aggregation = data.draw(st.sampled_from(AGGREGATIONS))
    base, zone = data.draw(st.sampled_from(SCENES))
    base_us = us(base)
    await create_meter(tenant, f"live{n}", f"t{n}", aggregation)
    batches = data.draw(sends(aggregation, f"e{n}", base_us))
    folds = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    await send(tenant, db, batches, folds, f"t{n}")
    await create_meter(tenant, f"late{n}", f"t{n}", aggregation)
    kept = first_arrivals([e for batch in batches for e in batch])
    for body in data.draw(st.lists(queries(base_us, zone), min_size=1, max_size=3)):
        live, late = await answer(tenant, f"live{n}", body), await answer(tenant, f"late{n}", body)
        assert late == live
        assert_agrees(aggregation, late, expected(aggregation, kept, body))
