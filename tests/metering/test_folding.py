"""The rollup journal: folding moves pending batches into rollups without changing answers."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from tests.conftest import _admin_dsn
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


async def test_a_batch_no_rollup_can_hold_stays_in_the_journal_while_every_other_folds(tenant, other_tenant, db):
    """Four events of 3e12 units in one cell pass what a 64-bit rollup holds: that journal row
    stays (queries read it from there, exactly) and the batches around it, of any tenant, fold."""
    for t in (tenant, other_tenant):
        assert (await t.client.post("/v1/meters", json=meter())).status_code == 201
    at = "2026-05-01T10:00:00Z"
    await tenant.client.post("/v1/events", json=[event("u1", time=at, tokens=1)])
    huge = [event("u2", time=at, tokens=3_000_000_000_000) for _ in range(4)]
    assert (await tenant.client.post("/v1/events", json=huge)).json()["accepted"] == 4
    await other_tenant.client.post("/v1/events", json=[event("u3", time=at, tokens=5)])
    stuck: set[int] = set()
    async with db.transaction() as session:
        assert await fold_pending(session, stuck=stuck) == 2
    assert (await pending(db, tenant.id), await pending(db, other_tenant.id)) == (1, 0)
    await other_tenant.client.post("/v1/events", json=[event("u4", time=at, tokens=6)])
    async with db.transaction() as session:  # the stuck row is passed over, not tried again
        assert (await fold_pending(session, stuck=stuck), len(stuck)) == (1, 1)
    assert (await pending(db, tenant.id), await pending(db, other_tenant.id)) == (1, 0)
    shown = sorted((r["subject"], r["value"]) for r in await answers(tenant, "tokens"))
    assert shown == [("u1", 1), ("u2", 12_000_000_000_000)]
    assert sorted((r["subject"], r["value"]) for r in await answers(other_tenant, "tokens")) == [("u3", 5), ("u4", 6)]


async def test_a_rollup_sum_that_would_pass_64_bits_in_the_database_is_never_rounded(tenant, db):
    """SQLite's + turns to floating point past 64 bits: the fold that would do it is left in
    the journal instead, and the meter still answers the exact sum."""
    assert (await tenant.client.post("/v1/meters", json=meter())).status_code == 201
    at = "2026-05-01T10:00:00Z"
    units = 4_000_000_000_001
    stuck: set[int] = set()
    for batch in ([event("u", time=at, tokens=units)] * 2, [event("u", time=at, tokens=units)]):
        batch = [{**e, "id": f"{e['id']}-{i}"} for i, e in enumerate(batch)]
        assert (await tenant.client.post("/v1/events", json=batch)).json()["accepted"] == len(batch)
        async with db.transaction() as session:
            await fold_pending(session, stuck=stuck)
    assert (len(stuck), await pending(db, tenant.id)) == (1, 1)
    assert [(r["subject"], r["value"]) for r in await answers(tenant, "tokens")] == [("u", 3 * units)]


async def test_journal_rows_are_compressed_with_lz4_where_postgresql_has_it(postgres_database):  # type: ignore[no-untyped-def]
    """Each journal row (a transaction's minute cells) is compressed when stored; with LZ4 on
    a server built with it, at a fifth of the default method's CPU."""
    conn = await asyncpg.connect(_admin_dsn(postgres_database))
    try:
        has_lz4 = await conn.fetchval(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        method = await conn.fetchval(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = 'rollup_journal'::regclass AND attname = 'payload'")
    finally:
        await conn.close()
    assert has_lz4 is not None
    assert (method == b"l") == has_lz4
