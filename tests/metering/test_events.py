"""The event list (`GET /v1/events`): what each stored event counts towards, and why not."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from tests.helpers import event, meter


async def every_page(tenant: Any, **params: Any) -> list[dict[str, Any]]:
    """The items of every page, following `next_cursor` until it is null."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        resp = await tenant.client.get("/v1/events", params={**params, **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200, resp.text
        items += resp.json()["items"]
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("more than 100 pages")


async def test_an_unattributed_event_behind_many_counted_ones_is_reached_by_paging(tenant):
    """A status filter that finds nothing in the events it scanned still hands a cursor on."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["owned"]})
    await c.post("/v1/events", json=[event("stray", id="lost", tokens=1)])
    await c.post("/v1/events", json=[event("owned", tokens=1) for _ in range(30)])
    found = await every_page(tenant, status="unattributed", limit=1)
    assert [i["id"] for i in found] == ["lost"]


async def test_counted_events_page_through_to_the_end_under_a_status_filter(tenant):
    """Each counted event is listed once over the pages, between unattributed ones."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["owned"]})
    sent = []
    for i in range(5):
        sent.append(event("owned", id=f"counted-{i}", tokens=1))
        await c.post("/v1/events", json=[sent[-1], *(event("stray", tokens=1) for _ in range(12))])
    found = await every_page(tenant, status="counted", limit=2)
    assert [i["id"] for i in found] == [e["id"] for e in reversed(sent)]


async def test_an_event_every_meter_of_its_type_filters_out_says_so(tenant):
    """Unattributed for want of a meter: the problems name the meters whose filters left it out."""
    c = tenant.client
    await c.post("/v1/meters", json=meter("paid", "COUNT", filters=[{"property": "$.plan", "op": "eq", "value": "paid"}]))
    await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["owned"]})
    await c.post("/v1/events", json=[event("owned", id="free", plan="free"), event("owned", id="paid", plan="paid")])
    items = {i["id"]: i for i in (await c.get("/v1/events")).json()["items"]}
    assert (items["paid"]["status"], items["paid"]["problems"]) == ("counted", [])
    assert items["free"]["status"] == "unattributed"
    assert items["free"]["problems"] == ["the filters of meter 'paid' leave it out"]


async def test_an_event_list_from_after_to_is_a_422_naming_from(tenant):
    """Swapped bounds are said as such (as a meter query says them), not answered with no events."""
    resp = await tenant.client.get("/v1/events", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["from"], resp.text


@pytest.mark.backends("sqlite")
async def test_the_event_list_reads_a_page_without_sorting_the_log_or_scanning_repeats(tenant, db):
    """Each statement of a status-filtered page is answered from an index walk, not a sort of
    every stored event or a scan of every repeat (seconds on a log of millions)."""
    await tenant.client.post("/v1/meters", json=meter())
    batch = [event(f"s{i}", id=f"e{i}", tokens=1) for i in range(20)]
    await tenant.client.post("/v1/events", json=batch)
    await tenant.client.post("/v1/events", json=batch)  # every one a repeat
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT") and ("FROM events" in sql or "FROM event_repeats" in sql):
            statements.append((sql, params))

    sync_engine = db.read_engine.sync_engine
    sqlalchemy.event.listen(sync_engine, "before_cursor_execute", seen)
    try:
        resp = await tenant.client.get("/v1/events", params={"status": "counted", "limit": 5})
    finally:
        sqlalchemy.event.remove(sync_engine, "before_cursor_execute", seen)
    assert resp.status_code == 200, resp.text
    assert any("FROM events" in sql for sql, _ in statements), statements
    assert any("FROM event_repeats" in sql for sql, _ in statements), statements
    async with db.read_engine.connect() as conn:
        for sql, params in statements:
            plan = " | ".join(str(row[-1]) for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "TEMP B-TREE FOR ORDER BY" not in plan and "SCAN event_repeats" not in plan, plan
            assert "LIST SUBQUERY" not in plan, plan
