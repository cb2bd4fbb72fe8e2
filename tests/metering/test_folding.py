"""The rollup journal: folding moves pending batches into rollups without changing answers."""

from __future__ import annotations

from tests.helpers import event, meter

from allotment.db import fetch
from allotment.metering import queries
from allotment.metering.folding import fold_pending

QUERY = {"from": "2026-05-01T00:00:00Z", "to": "2026-05-03T00:00:00Z", "window_size": "HOUR", "group_by": "subject"}


async def answers(tenant, key):  # type: ignore[no-untyped-def]
    resp = await tenant.client.get(f"/v1/meters/{key}/query", params=QUERY)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def pending(db, tenant_id):  # type: ignore[no-untyped-def]
    async with db.transaction(readonly=True) as session:
        return len(await queries.pending_journal(session, tenant_id))


async def test_answers_are_the_same_before_and_after_folding(tenant, db):
    """Acknowledged usage is visible at once, and folding it changes nothing a reader sees."""
    for agg, key in [("SUM", "s"), ("MAX", "mx"), ("LATEST", "l"), ("UNIQUE_COUNT", "u"), ("AVG", "a")]:
        prop = "$.user" if agg == "UNIQUE_COUNT" else "$.tokens"
        await tenant.client.post("/v1/meters", json=meter(key, agg, value_property=prop))
    times = ["2026-05-01T10:00:05Z", "2026-05-01T10:30:00Z", "2026-05-01T11:59:59Z", "2026-05-02T00:00:00Z"]
    for i, at in enumerate(times):
        batch = [event(f"u{i % 2}", time=at, tokens=i * 10 + 1, user=f"p{i % 3}"), event("u1", time=at, tokens=2, user="p9")]
        assert (await tenant.client.post("/v1/events", json=batch)).json()["accepted"] == 2
    before = {key: await answers(tenant, key) for key in ("s", "mx", "l", "u", "a")}
    assert await pending(db, tenant.id) == 4
    async with db.transaction() as session:
        assert await fold_pending(session) == 4
    assert await pending(db, tenant.id) == 0
    after = {key: await answers(tenant, key) for key in ("s", "mx", "l", "u", "a")}
    assert after == before
    assert sum(row["value"] for row in before["s"]) == 1 + 11 + 21 + 31 + 4 * 2


async def test_folding_twice_counts_once(tenant, db):
    """A folded journal row is gone: a second fold finds nothing and adds nothing."""
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(time="2026-05-01T10:00:00Z", tokens=5)])
    async with db.transaction() as session:
        assert await fold_pending(session) == 1
    async with db.transaction() as session:
        assert await fold_pending(session) == 0
    assert [r["value"] for r in await answers(tenant, "tokens")] == [5]


async def test_deleted_meter_is_not_folded(tenant, db):
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(time="2026-05-01T10:00:00Z", tokens=5)])
    assert (await tenant.client.delete("/v1/meters/tokens")).status_code == 204
    async with db.transaction() as session:
        await fold_pending(session)
        rows = await fetch(session, "SELECT COUNT(*) FROM rollups", "SELECT COUNT(*) FROM rollups")
    assert rows[0][0] == 0
