"""Reads of the event log by type and time find exactly the events in range.

The log is indexed by the minute of an event's time (models.EVENT_MINUTE): these reads must
hold at minute edges as well as anywhere else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.helpers import event, meter

BASE = datetime(2026, 1, 1, tzinfo=UTC)  # a minute edge
OFFSETS_S = [-3600.25, -90, -60, -59.5, -30, -0.5, 0, 0.5, 30, 59.999999, 60, 61.5, 7200]


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def logged(tenant):  # type: ignore[no-untyped-def]
    """One event worth 2**i tokens at each offset, and one of another type at each offset."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    batch = [event(tokens=2**i, time=at(s)) for i, s in enumerate(OFFSETS_S)]
    batch += [event(type="other", tokens=1, time=at(s)) for s in OFFSETS_S]
    resp = await c.post("/v1/events", json=batch)
    assert resp.json()["accepted"] == 2 * len(OFFSETS_S), resp.text
    return tenant


def expected(lo: float, hi: float) -> int:
    return sum(2**i for i, s in enumerate(OFFSETS_S) if lo <= s < hi)


@pytest.mark.parametrize(("lo", "hi"), [
    (-60, 60), (-59.75, -0.25), (-90.5, 0.5), (-3600.5, -3600), (-0.5, 0.000001), (0.25, 59.999999),
    (30, 61.5), (59.999999, 60.000001), (-1e6, 1e6), (-59.5, -59.499999), (1, 2),
])
async def test_a_query_with_sub_minute_edges_counts_exactly_the_events_in_range(logged, lo, hi):
    resp = await logged.client.get("/v1/meters/tokens/query", params={"from": at(lo), "to": at(hi)})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data[0]["value"] if data else 0) == expected(lo, hi)


async def test_a_query_without_from_starts_at_the_first_event(logged):
    resp = await logged.client.get("/v1/meters/tokens/query", params={"to": at(-59.75)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["value"] == expected(-1e9, -59.75)


@pytest.mark.parametrize(("lo", "hi"), [(-60, 0.5), (-90, -59.5), (0, 60)])
async def test_the_event_list_by_type_and_time_holds_exactly_the_events_in_range(logged, lo, hi):
    resp = await logged.client.get("/v1/events", params={"type": "prompt", "from": at(lo), "to": at(hi),
                                                         "limit": 100})
    assert resp.status_code == 200, resp.text
    times = sorted(datetime.fromisoformat(e["time"]) for e in resp.json()["items"])
    assert times == [BASE + timedelta(seconds=s) for s in OFFSETS_S if lo <= s < hi]
