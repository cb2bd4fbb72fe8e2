"""A meter with `event_from` counts only the events from that instant on: stored ones at its
creation, late ones at ingest, and the live counters of the features it measures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.entitlements.catalogue import feature, metered, ok, plan, subscribe
from tests.helpers import event, meter

FROM = "2026-03-02T00:00:00Z"
WEEK = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-08T00:00:00Z"}


async def _total(c, key: str = "tokens") -> object:  # type: ignore[no-untyped-def]
    rows = (await ok(await c.get(f"/v1/meters/{key}/query", params=WEEK)))["data"]
    return rows[0]["value"]


async def test_a_meter_created_with_event_from_counts_only_the_stored_events_from_then(tenant):
    """Backfill skips what came before `event_from`; the meter shows it."""
    c = tenant.client
    await c.post("/v1/events", json=[event(tokens=3, time="2026-03-01T23:59:59Z"),
                                     event(tokens=5, time=FROM), event(tokens=7, time="2026-03-03T10:00:00Z")])
    created = await ok(await c.post("/v1/meters", json=meter(event_from=FROM)), 201)
    assert (created["event_from"], created["backfilled_events"]) == ("2026-03-02T00:00:00Z", 2)
    assert await _total(c) == 12
    assert (await ok(await c.get("/v1/meters/tokens")))["event_from"] == "2026-03-02T00:00:00Z"


async def test_late_events_from_before_event_from_are_stored_but_not_counted(tenant):
    """An event reported late for before `event_from` is kept, and the listing says why the
    meter left it out."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter(event_from=FROM)), 201)
    resp = await c.post("/v1/events", json=[event(id="early", tokens=3, time="2026-03-01T12:00:00Z"),
                                            event(id="on-time", tokens=5, time="2026-03-04T12:00:00Z")])
    assert resp.json()["accepted"] == 2, resp.text
    assert await _total(c) == 5
    items = {i["id"]: i for i in (await ok(await c.get("/v1/events")))["items"]}
    assert items["on-time"]["meters"] == ["tokens"] and items["early"]["meters"] == []
    assert "meter 'tokens' counts events from 2026-03-02T00:00:00Z" in items["early"]["problems"]


async def test_a_feature_on_the_meter_counts_no_usage_from_before_event_from(tenant):
    """The live counter a check reads follows the meter: usage before `event_from` is not spent."""
    c = tenant.client
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=2)
    await ok(await c.post("/v1/meters", json=meter(event_from=(now - timedelta(hours=1)).isoformat())), 201)
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 100, 100, 100)])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    await c.post("/v1/events", json=[event("acme-1", tokens=40, time=(now - timedelta(minutes=90)).isoformat()),
                                     event("acme-1", tokens=25, time=(now - timedelta(minutes=30)).isoformat())])
    state = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "tokens"}))
    assert state["usage"] == 25


async def test_an_event_from_without_an_offset_is_a_422_naming_it(tenant):
    resp = await tenant.client.post("/v1/meters", json=meter(event_from="2026-03-02T00:00:00"))
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["event_from"]
