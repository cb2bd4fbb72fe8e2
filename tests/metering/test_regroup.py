"""A meter's group-by can change: its whole history is regrouped, exactly, once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from tests.conftest import _admin_dsn
from tests.entitlements.catalogue import feature, metered, ok, plan, subscribe
from tests.helpers import event, meter

from allotment.metering import meters, queries
from allotment.metering.folding import fold_pending
from allotment.metering.schemas import MeterUpdate
from allotment.types import utcnow

RANGE = {"from": "2026-05-01T00:00:00Z", "to": "2026-05-04T00:00:00Z", "window_size": "DAY"}
BOTH = {"model": "$.model", "region": "$.region"}
# subject, time, tokens, model, region, user (None: the event has no such property)
EVENTS = [
    ("u1", "2026-05-01T09:00:00Z", 5, "gpt-4", "eu", "p1"),
    ("u1", "2026-05-01T09:00:30Z", 7, "gpt-4", "us", "p2"),
    ("u2", "2026-05-01T23:59:59Z", 11, "gpt-3", "eu", "p1"),
    ("u2", "2026-05-02T00:00:00Z", 2, "gpt-3", None, "p3"),
    ("u3", "2026-05-02T12:15:00Z", 13, "gpt-4", "eu", "p2"),
    ("u1", "2026-05-02T12:15:10Z", 1, None, "us", "p1"),
    ("u3", "2026-05-03T08:00:00Z", 17, "gpt-4", "us", "p4"),
    ("u2", "2026-05-03T08:00:01Z", 3, "gpt-3", "eu", "p4"),
]


def as_event(row: tuple[Any, ...]) -> dict[str, Any]:
    subject, at, tokens, model, region, user = row
    data = {"tokens": tokens, "user": user, **({"model": model} if model else {}), **({"region": region} if region else {})}
    return event(subject, time=at, **data)


async def send(tenant: Any, rows: list[tuple[Any, ...]]) -> None:
    resp = await tenant.client.post("/v1/events", json=[as_event(r) for r in rows])
    assert resp.json()["accepted"] == len(rows), resp.text


async def fold(db: Any) -> None:
    async with db.transaction() as session:
        while await fold_pending(session):
            pass


async def journal_rows(db: Any, tenant_id: str) -> int:
    async with db.transaction(readonly=True) as session:
        return len(await queries.pending_journal(session, tenant_id))


async def grouped(tenant: Any, key: str, names: list[str]) -> dict[tuple[Any, ...], Decimal]:
    """Non-empty windows of the query by `names`: (day, *group values) -> value."""
    resp = await tenant.client.get(f"/v1/meters/{key}/query", params={**RANGE, "group_by": names})
    assert resp.status_code == 200, resp.text
    return {
        (r["window_start"][:10], *(r["group_by"].get(n) for n in names)): Decimal(str(r["value"]))
        for r in resp.json()["data"] if r["value"]
    }


def naive_sums(rows: list[tuple[Any, ...]], names: list[str]) -> dict[tuple[Any, ...], Decimal]:
    out: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for subject, at, tokens, model, region, user in rows:
        values = {"model": model, "region": region}
        out[(at[:10], *(values[n] for n in names))] += tokens
    return dict(out)


def naive_distinct(rows: list[tuple[Any, ...]], names: list[str]) -> dict[tuple[Any, ...], Decimal]:
    out: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for subject, at, tokens, model, region, user in rows:
        values = {"model": model, "region": region}
        out[(at[:10], *(values[n] for n in names))].add(user)
    return {k: Decimal(len(v)) for k, v in out.items()}


async def test_a_group_added_later_covers_every_event_stored_before(tenant, db):
    """Events folded into rollups and events still in the journal are each counted once by the new group."""
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await send(tenant, EVENTS[:5])
    await fold(db)
    await send(tenant, EVENTS[5:])
    changed = await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": BOTH}))
    assert changed["group_by"] == BOTH
    expected = naive_sums(EVENTS, ["model", "region"])
    assert await grouped(tenant, "tokens", ["model", "region"]) == expected
    await fold(db)
    assert await grouped(tenant, "tokens", ["model", "region"]) == expected
    assert await grouped(tenant, "tokens", ["region"]) == naive_sums(EVENTS, ["region"])


async def test_events_after_the_change_are_grouped_by_the_new_group_by(tenant, db):
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await send(tenant, EVENTS[:4])
    await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": {"region": "$.region"}}))
    await send(tenant, EVENTS[4:])
    assert await grouped(tenant, "tokens", ["region"]) == naive_sums(EVENTS, ["region"])
    await fold(db)
    assert await grouped(tenant, "tokens", ["region"]) == naive_sums(EVENTS, ["region"])


async def test_unique_count_is_exact_per_new_group_over_past_events(tenant, db):
    """The distinct values are rebuilt too: each region counts its own users, over folded and pending events."""
    body = meter("users", "UNIQUE_COUNT", value_property="$.user", group_by={"model": "$.model"})
    await ok(await tenant.client.post("/v1/meters", json=body), 201)
    await send(tenant, EVENTS[:3])
    await fold(db)
    await send(tenant, EVENTS[3:])
    await ok(await tenant.client.patch("/v1/meters/users", json={"group_by": {"region": "$.region"}}))
    assert await grouped(tenant, "users", ["region"]) == naive_distinct(EVENTS, ["region"])
    whole = await ok(await tenant.client.get("/v1/meters/users/query", params={"from": RANGE["from"], "to": RANGE["to"]}))
    assert [r["value"] for r in whole["data"]] == [len({row[5] for row in EVENTS})]
    await fold(db)
    assert await grouped(tenant, "users", ["region"]) == naive_distinct(EVENTS, ["region"])


async def test_the_same_group_by_sent_again_rebuilds_nothing(tenant, db):
    """The journal row waiting to be folded is left as it is: nothing was regrouped."""
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await send(tenant, EVENTS[:2])
    assert await journal_rows(db, tenant.id) == 1
    await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": {"model": "$.model"}, "name": "Tokens"}))
    assert await journal_rows(db, tenant.id) == 1
    assert await grouped(tenant, "tokens", ["model"]) == naive_sums(EVENTS[:2], ["model"])


async def test_a_group_by_change_is_in_the_audit_log_with_before_and_after(tenant):
    created = await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": BOTH}))
    log = await ok(await tenant.client.get("/v1/audit-log", params={"entity_id": created["id"]}))
    (entry,) = [e for e in log["items"] if e["action"] == "meter.updated"]
    assert (entry["before"]["group_by"], entry["after"]["group_by"]) == ({"model": "$.model"}, BOTH)


@pytest.mark.parametrize(
    ("group_by", "field"),
    [
        ({"model": "$.model", "region": "region"}, "group_by.region"),
        ({"model": "$.model", "region": "$.["}, "group_by.region"),
        ({"subject": "$.subject"}, "group_by"),
        (None, "group_by"),
    ],
)
async def test_a_bad_group_by_is_a_422_naming_it_and_changes_nothing(tenant, group_by, field):
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    resp = await tenant.client.patch("/v1/meters/tokens", json={"group_by": group_by})
    assert resp.status_code == 422, resp.text
    assert field in [e["field"] for e in resp.json()["errors"]], resp.text
    assert (await ok(await tenant.client.get("/v1/meters/tokens")))["group_by"] == {"model": "$.model"}


@pytest.mark.parametrize("group_by", [{"region": "$.region"}, {"model": "$.llm.model", "region": "$.region"}])
async def test_a_group_a_feature_filters_on_cannot_be_removed_or_changed(tenant, group_by):
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await feature(tenant.client, "gpt4-tokens", meter="tokens", meter_group_filter={"model": "gpt-4"})
    resp = await tenant.client.patch("/v1/meters/tokens", json={"group_by": group_by})
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert [e["field"] for e in body["errors"]] == ["group_by.model"]
    assert "gpt4-tokens" in body["detail"] and "gpt4-tokens" in body["errors"][0]["message"]
    assert (await ok(await tenant.client.get("/v1/meters/tokens")))["group_by"] == {"model": "$.model"}


async def test_a_group_of_an_archived_feature_may_change(tenant):
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await feature(tenant.client, "gpt4-tokens", meter="tokens", meter_group_filter={"model": "gpt-4"})
    await ok(await tenant.client.delete("/v1/features/gpt4-tokens"), 204)
    await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": {"region": "$.region"}}))


async def test_live_counters_keep_their_value_when_a_group_is_added(tenant, db):
    """A feature filtering on `model` counted its usage at ingest; adding `region` leaves that
    count alone, and later events count on it as before."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await feature(c, "gpt4-tokens", meter="tokens", meter_group_filter={"model": "gpt-4"})
    await plan(c, "starter", [metered("gpt4-tokens", 1000, 1000, 1000)])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["u1", "u3"]}), 201)
    now = utcnow().replace(microsecond=0)
    await subscribe(c, "acme", "starter", starts_at=(now - timedelta(minutes=1)).isoformat())

    async def usage() -> Any:
        return (await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "gpt4-tokens"})))["usage"]

    recent = [("u1", (now - timedelta(seconds=5)).isoformat(), 20, "gpt-4", "eu", "p1"),
              ("u3", (now - timedelta(seconds=4)).isoformat(), 8, "gpt-3", "us", "p2"),
              ("u3", (now - timedelta(seconds=3)).isoformat(), 4, "gpt-4", "us", "p3")]
    await send(tenant, recent[:2])
    await fold(db)
    await send(tenant, recent[2:])
    before = await usage()
    assert before == 24
    await ok(await c.patch("/v1/meters/tokens", json={"group_by": BOTH}))
    assert await usage() == before
    await send(tenant, [("u1", (now - timedelta(seconds=2)).isoformat(), 6, "gpt-4", "us", "p1")])
    assert await usage() == before + 6


async def test_a_change_during_ingest_and_folding_counts_every_event_once(tenant, db):
    """Batches sent and folds run while the group-by changes: each event counts once, grouped anew."""
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    batches = [EVENTS[i : i + 2] for i in range(0, len(EVENTS), 2)]
    await send(tenant, batches[0])

    async def patch() -> None:
        await ok(await tenant.client.patch("/v1/meters/tokens", json={"group_by": BOTH}))

    await asyncio.gather(*(send(tenant, b) for b in batches[1:]), patch(), fold(db), fold(db))
    assert await grouped(tenant, "tokens", ["model", "region"]) == naive_sums(EVENTS, ["model", "region"])
    await fold(db)
    assert await grouped(tenant, "tokens", ["model", "region"]) == naive_sums(EVENTS, ["model", "region"])


@pytest.mark.backends("postgresql")  # SQLite's single writer runs the fold and the change one after the other
async def test_a_change_waits_for_a_fold_in_flight_and_counts_its_rows_once(tenant, db, database_url):
    """A fold that claimed journal rows before the change commits first; the change then rebuilds
    from the log without adding those rows' cells again."""
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await send(tenant, EVENTS[:4])
    await fold(db)
    await send(tenant, EVENTS[4:])
    async with db.transaction() as session:
        assert await fold_pending(session) == 1  # claimed and folded, not yet committed
        change = asyncio.create_task(tenant.client.patch("/v1/meters/tokens", json={"group_by": BOTH}))
        await _until_a_statement_waits_for_a_lock(database_url)
        assert not change.done()
    await ok(await change)
    assert await grouped(tenant, "tokens", ["model", "region"]) == naive_sums(EVENTS, ["model", "region"])
    assert await journal_rows(db, tenant.id) == 0


async def _until_a_statement_waits_for_a_lock(database_url: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(database_url))
    try:
        for _ in range(1000):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%rollup_journal%'")
            if waiting:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the change never waited for the fold")
    finally:
        await conn.close()


async def test_a_group_by_change_stamped_before_the_last_change_reaches_ingest(tenant, db):
    """A process whose clock is behind changes the group-by: events sent afterwards still get the new groups."""
    await ok(await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await tenant.client.post("/v1/meters", json=meter("calls", "COUNT")), 201)
    await send(tenant, EVENTS[:1])  # this process now holds the meters as they are
    async with db.transaction() as session:
        await meters.update(session, tenant.id, "tokens", MeterUpdate(group_by={"region": "$.region"}),
                            at=utcnow() - timedelta(hours=1))
    await send(tenant, EVENTS[1:])
    assert await grouped(tenant, "tokens", ["region"]) == naive_sums(EVENTS, ["region"])

