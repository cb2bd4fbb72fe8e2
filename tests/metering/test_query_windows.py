"""Query rows name whole windows of the window time zone, whatever `from` and `to` are, and
count only the events within [from, to)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.helpers import event, meter


@pytest.fixture
async def berlin(tenant):  # type: ignore[no-untyped-def]
    """Tokens around 20-22 Nov 2026 (Berlin is UTC+1): 1 late on the 19th in Berlin but the
    20th in UTC, 2 on the morning of the 20th, 4 on the 21st, 8 on the evening of the 22nd."""
    await tenant.client.post("/v1/meters", json=meter())
    resp = await tenant.client.post("/v1/events", json=[
        event(tokens=1, time="2026-11-19T23:30:00Z"),
        event(tokens=2, time="2026-11-20T10:00:00Z"),
        event(tokens=4, time="2026-11-21T10:00:00Z"),
        event(tokens=8, time="2026-11-22T20:00:00Z"),
    ])
    assert resp.json()["accepted"] == 4, resp.text
    return tenant


async def rows(tenant: Any, **params: str) -> list[tuple[str, str, Any]]:
    resp = await tenant.client.get("/v1/meters/tokens/query", params=params)
    assert resp.status_code == 200, resp.text
    return [(r["window_start"], r["window_end"], r["value"]) for r in resp.json()["data"]]


async def test_a_berlin_day_from_utc_midnight_is_labelled_as_the_whole_berlin_day(berlin):
    """The first row is 19 Nov 23:00Z to 20 Nov 23:00Z, counting only what came after `from`."""
    got = await rows(berlin, **{"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z",
                                "window_size": "DAY", "window_time_zone": "Europe/Berlin"})
    assert got == [
        ("2026-11-19T23:00:00Z", "2026-11-20T23:00:00Z", 2),
        ("2026-11-20T23:00:00Z", "2026-11-21T23:00:00Z", 4),
        ("2026-11-21T23:00:00Z", "2026-11-22T23:00:00Z", 0),  # its first hour is in the range
    ]


async def test_a_month_window_is_the_calendar_month_counting_only_the_range(berlin):
    got = await rows(berlin, **{"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z",
                                "window_size": "MONTH", "window_time_zone": "Europe/Berlin"})
    assert got == [("2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z", 6)]


async def test_without_from_the_first_window_is_the_whole_day_of_the_first_event(berlin):
    got = await rows(berlin, to="2026-11-21T00:00:00Z", window_size="DAY")
    assert got == [
        ("2026-11-19T00:00:00Z", "2026-11-20T00:00:00Z", 1),
        ("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", 2),
    ]


async def test_the_last_window_ends_on_a_boundary_after_to(berlin):
    """`to` inside a day (or now, when omitted) closes the range, not the last window."""
    got = await rows(berlin, **{"from": "2026-11-22T00:00:00Z", "to": "2026-11-22T21:30:00Z", "window_size": "DAY"})
    assert got == [("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z", 8)]
    last_end = datetime.fromisoformat((await rows(berlin, **{"from": "2026-11-22T00:00:00Z", "window_size": "HOUR"}))[-1][1])
    assert last_end > datetime.now(UTC) and (last_end.minute, last_end.second, last_end.microsecond) == (0, 0, 0)


async def test_a_day_when_berlin_clocks_go_back_is_25_hours(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(tokens=3, time="2026-10-25T12:00:00Z")])
    got = await rows(tenant, **{"from": "2026-10-25T11:00:00Z", "to": "2026-10-25T13:00:00Z",
                                "window_size": "DAY", "window_time_zone": "Europe/Berlin"})
    assert got == [("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 3)]


async def test_csv_rows_name_the_same_whole_windows(berlin):
    resp = await berlin.client.get("/v1/meters/tokens/query", params={
        "from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z", "window_size": "DAY",
        "window_time_zone": "Europe/Berlin", "format": "csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv"), resp.text
    got = [(r["window_start"], r["window_end"], r["value"]) for r in csv.DictReader(io.StringIO(resp.text))]
    assert got == [
        ("2026-11-19T23:00:00Z", "2026-11-20T23:00:00Z", "2"),
        ("2026-11-20T23:00:00Z", "2026-11-21T23:00:00Z", "4"),
        ("2026-11-21T23:00:00Z", "2026-11-22T23:00:00Z", "0"),
    ]
