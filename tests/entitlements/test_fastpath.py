"""The one-read check: same answers as the full check, and never stale after a change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from allotment.config import Settings
from allotment.db import Database
from allotment.entitlements import check as full
from allotment.entitlements import fastpath, offers, queries, resolve
from allotment.types import to_micros, utcnow
from tests.conftest import migrated_postgres_database
from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe
from tests.entitlements.test_grants import T0, _clockwork, day
from tests.helpers import event, meter


async def _setup(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await feature(c, "sso")
    await feature(c, "limits")
    await plan(c, "starter", [
        metered("api-calls", 10, 10, 15), boolean("sso"),
        {"feature": "limits", "kind": "static", "config": {"rpm": 60}},
    ])
    await customer(c, "acme")
    return await subscribe(c, "acme", "starter")


async def _check(c, feature="api-calls", status=200, **body):  # type: ignore[no-untyped-def]
    return await ok(await c.post("/v1/check", json={"customer": "acme", "feature": feature, **body}), status)


async def _both(db: Database, tenant_id: str, feature: str, quantity: int):  # type: ignore[no-untyped-def]
    request = full.CheckRequest("acme", feature, Decimal(quantity))
    at = utcnow()
    fast = await fastpath.check(db, tenant_id, request, at)
    async with db.transaction(readonly=True) as session:
        slow = await full.check(session, tenant_id, request, at=at)
    return fast, slow


async def test_fast_answers_equal_full_answers_in_every_state(tenant, db):
    """Allow, overdraft and deny, boolean and static: the one read decides like the full check."""
    c = tenant.client
    await _setup(c)
    for name in ("api-calls", "sso", "limits"):
        await _check(c, feature=name)  # resolves the names in this process
    for used in (0, 9, 12, 15):
        if used:
            await _check(c, quantity=used - (await _check(c))["usage"], consume=True)
        for name, quantity in (("api-calls", 1), ("api-calls", 4), ("sso", 1), ("limits", 1)):
            fast, slow = await _both(db, tenant.id, name, quantity)
            assert fast is not None, f"{name} after {used} took the full path"
            assert fast == slow


async def test_fast_deny_is_recorded(tenant):
    """A check refused on the one-read path is listed in the denials like any other."""
    c = tenant.client
    await _setup(c)
    await _check(c, quantity=15, consume=True)
    assert (await _check(c))["decision"] == "deny"
    assert (await _check(c))["decision"] == "deny"
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme"}))
    assert [d["reason"] for d in denials["items"]] == ["hard_limit", "hard_limit"]


async def test_check_follows_a_plan_change_at_once(tenant):
    """A remembered entitlement ended by a plan change is not used for the next check."""
    c = tenant.client
    sub = await _setup(c)
    assert (await _check(c, quantity=20))["decision"] == "deny"
    await plan(c, "pro", [metered("api-calls", 100, 100, 150)])
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    body = await _check(c, quantity=20)
    assert (body["decision"], body["included"]) == ("allow", 100)


async def test_check_follows_a_cancel_and_an_override(tenant):
    c = tenant.client
    sub = await _setup(c)
    assert (await _check(c, feature="sso"))["decision"] == "allow"
    await ok(await c.put("/v1/customers/acme/entitlements/sso/override", json={"kind": "boolean", "has_access": False}))
    assert (await _check(c, feature="sso"))["reason"] == "no_access"
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}))
    assert (await _check(c))["reason"] == "not_entitled"


async def _delete_acme(c):  # type: ignore[no-untyped-def]
    """Cancel acme's subscriptions (a live one forbids the delete), then delete acme."""
    for sub in (await ok(await c.get("/v1/subscriptions", params={"customer": "acme"})))["items"]:
        if sub["status"] != "canceled":
            await ok(await c.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}))
    await ok(await c.delete("/v1/customers/acme"), 204)


async def test_check_after_customer_deleted_is_404(tenant):
    c = tenant.client
    await _setup(c)
    assert (await _check(c))["decision"] == "allow"
    await _delete_acme(c)
    await _check(c, status=404)


async def test_customers_keep_an_archived_feature_even_once_its_key_is_taken_again(tenant):
    """Archiving stops new plans from adding a feature; whoever has it keeps it, on every path.
    A new feature created with the key takes nothing from them."""
    c = tenant.client
    await _setup(c)
    assert (await _check(c, feature="sso"))["decision"] == "allow"
    assert (await _check(c, consume=True))["usage"] == 1
    await ok(await c.delete("/v1/features/api-calls"), 204)
    await ok(await c.delete("/v1/features/sso"), 204)
    assert (await _check(c, feature="sso"))["decision"] == "allow"
    kept = await _check(c, consume=True)
    assert (kept["decision"], kept["usage"]) == ("allow", 2)
    listed = await ok(await c.get("/v1/customers/acme/entitlements"))
    assert sorted(i["feature"] for i in listed["items"]) == ["api-calls", "limits", "sso"]
    assert (await ok(await c.get("/v1/customers/acme/entitlements/api-calls")))["usage"] == 2
    refused = await c.post("/v1/plans", json={"key": "next", "name": "Next", "entitlements": [boolean("sso")]})
    assert refused.status_code == 404
    await feature(c, "sso")
    assert (await _check(c, feature="sso"))["decision"] == "allow"


async def test_events_keep_counting_on_an_archived_feature(tenant):
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await feature(c, "tokens", meter="tokens")
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "tokens", "kind": "metered",
                                                                  "included": 10, "hard_limit": 15}), 201)
    await c.post("/v1/events", json=[event("acme-1", tokens=2)])
    await ok(await c.delete("/v1/features/tokens"), 204)
    await c.post("/v1/events", json=[event("acme-1", tokens=3)])
    assert (await _check(c, feature="tokens"))["usage"] == 5


async def test_a_check_counts_what_rolled_over_after_an_override_took_the_row_over(tenant):
    """Yesterday's unused 10 roll 5 into today; an override then raises the cap: every check
    (the one-read path too) answers as the entitlement page does."""
    c = tenant.client
    await feature(c, "data")
    await plan(c, "daily", [{"feature": "data", "kind": "metered", "usage_period": "DAY", "included": 10,
                             "hard_limit": 10, "included_rollover": 5}])
    await customer(c, "acme")
    yesterday = (utcnow() - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    await subscribe(c, "acme", "daily", starts_at=yesterday.isoformat())
    await ok(await c.put("/v1/customers/acme/entitlements/data/override", json={"hard_limit": 12}))
    page = await ok(await c.get("/v1/customers/acme/entitlements/data"))
    for _ in range(2):
        seen = await _check(c, feature="data", quantity=14)
        assert (seen["decision"], seen["soft_limit"], seen["hard_limit"], seen["balance"]) == (
            "allow", page["soft_limit"], page["hard_limit"], page["balance"])
    assert (page["rolled_over"], page["hard_limit"]) == (5, 17)


async def test_expired_hold_does_not_count_on_a_plain_check(tenant, db):
    """A reservation past its expiry no longer holds units, even before anything swept it."""
    c = tenant.client
    await _setup(c)
    await _check(c)
    held = await ok(await c.post("/v1/reservations", json={
        "customer": "acme", "feature": "api-calls", "quantity": 15, "ttl_seconds": 60}), 201)
    assert held["decision"] != "deny"
    assert (await _check(c))["decision"] == "deny"
    later = utcnow() + timedelta(seconds=61)
    request = full.CheckRequest("acme", "api-calls", Decimal(1))
    assert await fastpath.check(db, tenant.id, request, later) is None
    async with db.transaction() as session:
        answer = await full.check(session, tenant.id, request, at=later)
    assert answer.decision.decision == "allow"


async def test_fast_consume_counts_like_the_full_consume(tenant, db):
    """Consumes on the one-read path report and count exactly what the full path would."""
    c = tenant.client
    await _setup(c)
    await _check(c)
    request = full.CheckRequest("acme", "api-calls", Decimal(6), consume=True)
    answers = [await fastpath.check(db, tenant.id, request, utcnow()) for _ in range(3)]
    assert all(a is not None for a in answers)
    verdicts = [(a.decision.decision, a.decision.usage) for a in answers]  # type: ignore[union-attr]
    assert verdicts == [("allow", 6), ("allow_overdraft", 12), ("deny", 12)]
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert state["usage"] == 12
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme"}))
    assert [(d["reason"], d["quantity"]) for d in denials["items"]] == [("hard_limit", 6)]


async def test_concurrent_fast_consumes_stop_exactly_at_the_hard_limit(tenant):
    """Forty concurrent consumers of 1 against a hard limit of 15: exactly 15 are allowed."""
    c = tenant.client
    await _setup(c)
    await _check(c)
    answers = await asyncio.gather(*(_check(c, consume=True) for _ in range(40)))
    assert sum(a["decision"] != "deny" for a in answers) == 15
    assert (await _check(c))["usage"] == 15


async def test_carried_overage_counts_when_reported_usage_opened_the_period(tenant, db):
    """February's counter opened by reported usage still starts from January's overage."""
    clock = await _clockwork(tenant, db, included=10, overage_at_reset="carry", usage_anchor=T0.isoformat())
    await clock.consume(14, day(3))  # 4 over the soft limit in January
    known = resolve.remembered(tenant.id, "acme", "data")
    assert known is not None and known.row is not None
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    async with db.transaction() as session:  # what ingest does with an event of February
        await queries.add_usage(session, tenant.id, [(known.row.id, to_micros(feb), queries.MILLION)])
    later = feb + timedelta(days=1)
    request = full.CheckRequest("acme", "data", Decimal(1))
    answer = await fastpath.check(db, tenant.id, request, later) or await clock.check(1, later)
    assert answer.decision.usage == 5


async def test_check_sees_a_commit_made_through_other_connections_at_once(tenant, db, settings):
    """Usage consumed by another process (its own connections) shows in this process's next check.

    The first checks are answered, and remembered, before the other process writes.
    """
    c = tenant.client
    await _setup(c)
    request = full.CheckRequest("acme", "api-calls", Decimal(1))
    for _ in range(2):
        before = await fastpath.check(db, tenant.id, request, utcnow())
        assert before is not None and before.decision.usage == 0
    other = Database(settings)
    try:
        async with other.transaction() as session:
            consume = full.CheckRequest("acme", "api-calls", Decimal(12), consume=True)
            await full.check(session, tenant.id, consume, at=utcnow())
    finally:
        await other.dispose()
    after = await fastpath.check(db, tenant.id, request, utcnow())
    assert after is not None
    assert (after.decision.usage, after.decision.decision) == (12, "allow_overdraft")


async def _consume_fast(db: Database, tenant_id: str, quantity: int = 1, at: datetime | None = None,
                        customer: str = "acme"):  # type: ignore[no-untyped-def]
    request = full.CheckRequest(customer, "api-calls", Decimal(quantity), consume=True)
    return await fastpath.check(db, tenant_id, request, at or utcnow())


async def test_a_consume_never_lands_on_a_remembered_row_that_no_longer_answers(tenant, db):
    """After a plan change, a top-up and an expired hold, the consume the fast path cannot
    prove is handed to the full check untaken (None), and the full check counts it once."""
    c = tenant.client
    sub = await _setup(c)
    assert (await _check(c, quantity=2, consume=True))["usage"] == 2  # remembered, counter open
    await plan(c, "pro", [metered("api-calls", 100, 100, 150)])
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    assert await _consume_fast(db, tenant.id) is None
    body = await _check(c, quantity=20, consume=True)
    assert (body["decision"], body["usage"], body["included"]) == ("allow", 22, 100)  # the period's 2 carried
    await ok(await c.post("/v1/customers/acme/entitlements/api-calls/grants", json={"amount": 5}), 201)
    assert await _consume_fast(db, tenant.id) is None  # a grant of the period: the full way
    assert (await _check(c, quantity=133, consume=True))["decision"] == "allow_overdraft"  # 155 = 150 + 5
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert state["usage"] == 155


async def test_a_consume_with_an_expired_hold_or_a_deleted_customer_is_not_taken_fast(tenant, db):
    c = tenant.client
    await _setup(c)
    await _check(c, consume=True)
    await ok(await c.post("/v1/reservations", json={
        "customer": "acme", "feature": "api-calls", "quantity": 10, "ttl_seconds": 60}), 201)
    later = utcnow() + timedelta(seconds=61)
    assert await _consume_fast(db, tenant.id, 3, later) is None
    async with db.transaction() as session:
        answer = await full.check(session, tenant.id, full.CheckRequest("acme", "api-calls", Decimal(3), True),
                                  at=later)
    assert (answer.decision.decision, answer.decision.usage) == ("allow", 4)
    await _delete_acme(c)
    assert await _consume_fast(db, tenant.id) is None
    await _check(c, consume=True, status=404)


async def test_concurrent_consumes_naming_the_customer_by_key_and_by_id_count_exactly(tenant, db):
    """One counter, two names for its customer in the same batches: 15 allowed in all, not more."""
    c = tenant.client
    await _setup(c)
    await _check(c, consume=True)
    customer_id = (await ok(await c.get("/v1/customers/acme")))["id"]
    names = ["acme", customer_id] * 20
    answers = await asyncio.gather(*(_check(c, consume=True, customer=name) for name in names))
    assert sum(a["decision"] != "deny" for a in answers) == 14
    assert (await _check(c))["usage"] == 15


async def test_names_holding_control_characters_are_unknown_not_an_error(tenant):
    """No key can hold a control character, so such a name is a 404, never a 500."""
    c = tenant.client
    await _setup(c)
    await _check(c, consume=True)  # the process knows the pair, and batches are running
    for body in ({"customer": "acme\x1f"}, {"feature": "api-calls\x1e"}):
        for consume in (False, True):
            resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", **body,
                                                   "consume": consume})
            assert resp.status_code == 404, resp.text
    assert (await _check(c))["usage"] == 1


@pytest.fixture
def empty_postgres_database() -> Iterator[str]:
    """A migrated PostgreSQL database of its own, with every table still empty."""
    yield from migrated_postgres_database()


async def test_a_hot_path_read_without_an_index_is_not_compiled(empty_postgres_database):
    """Without sequential scans such a read is priced past JIT's thresholds, and compiling it
    cost 200-350 ms per check that answers overdraft or deny (the catalogue's stamp)."""
    db = Database(Settings(database_url=empty_postgres_database))
    try:
        async with db.driver_transaction() as conn:
            await conn.execute(f"PREPARE stamp AS {offers._STAMP_PG}")
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE stamp('t')"))
            assert "JIT" not in plan, plan
    finally:
        await db.dispose()


async def test_hot_path_plans_made_on_an_empty_database_still_use_indexes(empty_postgres_database):
    """The hot paths keep one plan per connection, made at first use: made while the tables
    were empty (and known to be), it must still find rows by index once they hold millions."""
    db = Database(Settings(database_url=empty_postgres_database))
    # Each statement, and how it must reach customer_entitlements: by primary key (a check
    # names its row) or by the pair index (resolving names; the other rows of a customer
    # holding an archived feature, `h`). On empty tables the consume's statement costs the
    # same by any index; connections retire (db.DRIVER_MAX_AGE) and plan it again once the
    # tables have grown.
    pair = "ix_customer_entitlements_pair_from"
    statements = [
        (fastpath._PG_MANY, "('x')", {"e": "pk_customer_entitlements", "h": pair}),
        (resolve._LOOK_UP_PG, "('t', 'c', 'f', now())", {"e": pair, "h": pair, "h_1": pair}),
        (queries._TAKE_PROVEN, "('x', now())", {"e": " using ", "h": pair, "hr": "pk_customer_entitlements"}),
    ]
    try:
        async with db.driver_transaction() as conn:
            await conn.execute("ANALYZE")
            for n, (sql, args, indexes) in enumerate(statements):
                await conn.execute(f"PREPARE hot{n} AS {sql}")
                plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE hot{n}{args}"))
                assert "Seq Scan" not in plan, plan
                reads = [line for line in plan.splitlines() if " on customer_entitlements " in line]
                assert reads and all(indexes[line.split()[-4]] in line for line in reads), plan
                lines = plan.splitlines()
                features = [i for i, line in enumerate(lines) if " on features " in line]
                assert all("Index Cond" in lines[i + 1] for i in features), plan  # never every feature
    finally:
        await db.dispose()


@pytest.mark.parametrize(("quantity", "verdict", "usage"), [(12, "deny", 4), (11, "allow_overdraft", 15)])
async def test_a_consume_opening_a_period_counts_the_overage_carried_in(tenant, db, quantity, verdict, usage):
    """January ends 4 over its soft limit of 10, carried into February: February's first
    consume, whichever way it is committed, starts from those 4, so 12 more would pass the
    hard limit of 15 and is refused, and 11 reaches it exactly."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=15, overage_at_reset="carry",
                             usage_anchor=T0.isoformat())
    await clock.consume(14, day(3))
    later = datetime(2026, 2, 2, tzinfo=UTC)
    request = full.CheckRequest("acme", "data", Decimal(quantity), consume=True)
    answer = await fastpath.check(db, tenant.id, request, later) or await clock.consume(quantity, later)
    assert (answer.decision.decision.value, answer.decision.usage) == (verdict, usage)
    assert (await clock.state(later)).usage == usage
