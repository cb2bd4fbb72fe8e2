"""Consumes that arrive together share a transaction: still exact, and a failure stays alone."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from allotment.entitlements import check as full
from allotment.entitlements import group_commit, notices, resolve
from allotment.entitlements.periods import period_at
from allotment.types import utcnow
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe

CUSTOMERS = ("acme", "bravo", "charlie")


async def _setup(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 10, 10, 20)])
    for key in CUSTOMERS:
        await customer(c, key)
        await subscribe(c, key, "starter")
        await ok(await c.post("/v1/check", json={"customer": key, "feature": "api-calls"}))


async def test_concurrent_consumes_of_many_sizes_and_customers_count_exactly(tenant):
    """Each allowed answer reports the counter just after its own increment: sorted, the answers
    of one customer step from 0 by exactly the allowed quantities, never past the hard limit;
    the stored usage is their sum; every refusal is listed."""
    c = tenant.client
    await _setup(c)
    asks = [(key, 1 + i % 3) for i in range(30) for key in CUSTOMERS]

    async def consume(key: str, q: int) -> dict[str, object]:
        return await ok(await c.post("/v1/check", json={  # type: ignore[no-any-return]
            "customer": key, "feature": "api-calls", "quantity": q, "consume": True}))

    answers = await asyncio.gather(*(consume(key, q) for key, q in asks))
    denials = await ok(await c.get("/v1/denials", params={"limit": 500}))
    assert len(denials["items"]) == sum(a["decision"] == "deny" for a in answers)
    for key in CUSTOMERS:
        allowed = sorted((a["usage"], q) for (k, q), a in zip(asks, answers, strict=True)
                         if k == key and a["decision"] != "deny")
        total = 0
        for usage, q in allowed:
            assert usage == total + q
            total = usage
        assert 18 <= total <= 20  # refused only when the next ask would not fit
        state = await ok(await c.get(f"/v1/customers/{key}/entitlements/api-calls"))
        assert state["usage"] == total


async def test_a_consume_that_cannot_commit_fails_alone(tenant, db):
    """One consume of the batch names a counter that cannot be written: the others commit."""
    c = tenant.client
    await _setup(c)
    items = []
    for key in CUSTOMERS:
        known = resolve.remembered(tenant.id, key, "api-calls")
        assert known is not None and known.row is not None
        ent = full.metered_entitlement(known.row)
        at = utcnow()
        start, end = period_at(full.usage_period(known.row), at)
        entitlement_id = known.row.id if key != "bravo" else "ent_missing"
        where = notices.Where(tenant.id, entitlement_id, known.customer_id, known.feature_id, start, end)
        request = full.CheckRequest(key, "api-calls", Decimal(2), consume=True)
        items.append(group_commit.Consume(request, ent, where, at))
    answers = await asyncio.gather(*(group_commit.consume(db, item) for item in items),
                                   return_exceptions=True)
    assert [a.decision.usage for a in answers if not isinstance(a, BaseException)] == [2, 2]
    assert isinstance(answers[1], Exception)
    for key, usage in (("acme", 2), ("bravo", 0), ("charlie", 2)):
        state = await ok(await c.get(f"/v1/customers/{key}/entitlements/api-calls"))
        assert state["usage"] == usage


@pytest.mark.parametrize("hot", [True, False])
async def test_answers_wait_for_the_commit(tenant, db, hot):
    """What a consume answers is already stored: a read right after each answer sees it."""
    c = tenant.client
    await _setup(c)

    async def consume_then_read(key: str) -> tuple[float, float]:
        answer = await ok(await c.post("/v1/check", json={"customer": key, "feature": "api-calls",
                                                          "consume": True}))
        state = await ok(await c.get(f"/v1/customers/{key}/entitlements/api-calls"))
        return answer["usage"], state["usage"]

    keys = ["acme"] * 6 if hot else list(CUSTOMERS) * 2
    for reported, stored in await asyncio.gather(*(consume_then_read(k) for k in keys)):
        assert stored >= reported


async def test_concurrent_checks_each_get_their_own_customers_numbers(tenant):
    """Checks read together (one round trip on PostgreSQL) still answer each for its customer."""
    c = tenant.client
    await _setup(c)
    for n, key in enumerate(CUSTOMERS, 1):
        await ok(await c.post("/v1/check", json={"customer": key, "feature": "api-calls", "quantity": n,
                                                  "consume": True}))
    asks = [CUSTOMERS[i % 3] for i in range(60)]
    answers = await asyncio.gather(*(
        c.post("/v1/check", json={"customer": key, "feature": "api-calls"}) for key in asks))
    assert [a.json()["usage"] for a in answers] == [CUSTOMERS.index(key) + 1 for key in asks]


async def test_a_batch_mixing_roomy_and_nearly_full_counters_decides_each_in_order(tenant, db):
    """In one transaction, a counter with room for the whole batch takes it at once and one near
    its hard limit is decided consume by consume: each answer reports its own increment."""
    c = tenant.client
    await _setup(c)
    await ok(await c.post("/v1/check", json={"customer": "bravo", "feature": "api-calls", "quantity": 18,
                                             "consume": True}))

    def item(key: str, quantity: int) -> group_commit.Consume:
        known = resolve.remembered(tenant.id, key, "api-calls")
        assert known is not None and known.row is not None
        at = utcnow()
        start, end = period_at(full.usage_period(known.row), at)
        where = notices.Where(tenant.id, known.row.id, known.customer_id, known.feature_id, start, end)
        request = full.CheckRequest(key, "api-calls", Decimal(quantity), consume=True)
        return group_commit.Consume(request, full.metered_entitlement(known.row), where, at)

    batch = [item("acme", 2), item("bravo", 1), item("acme", 3), item("bravo", 2), item("bravo", 1)]
    async with db.transaction() as session:
        answers = await group_commit.decide_all(session, batch)
    assert [(a.decision.decision.value, a.decision.usage) for a in answers] == [
        ("allow", 2), ("allow_overdraft", 19), ("allow", 5), ("deny", 19), ("allow_overdraft", 20)]
    for key, usage in (("acme", 5), ("bravo", 20)):
        state = await ok(await c.get(f"/v1/customers/{key}/entitlements/api-calls"))
        assert state["usage"] == usage


async def test_consumes_batched_across_thresholds_tell_each_crossing_once(tenant, db):
    """Consumes that arrive together and cross 80 % and 100 % of what is included are still told
    of once each, whichever of them crossed, and counted once each."""
    from sqlalchemy import select

    from allotment.notifications.models import Notification

    c = tenant.client
    await _setup(c)
    answers = await asyncio.gather(*(
        c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "consume": True}) for _ in range(12)))
    assert sorted(a.json()["usage"] for a in answers) == list(range(1, 13))
    async with db.transaction(readonly=True) as s:
        kinds = (await s.scalars(select(Notification.type).where(Notification.tenant_id == tenant.id))).all()
    usage_kinds = (notices.THRESHOLD_REACHED, notices.OVERDRAFT_STARTED, notices.HARD_LIMIT_REACHED)
    assert sorted(k for k in kinds if k in usage_kinds) == sorted(
        [notices.THRESHOLD_REACHED, notices.THRESHOLD_REACHED, notices.OVERDRAFT_STARTED])


async def test_concurrent_consumes_whose_sum_passes_what_a_counter_holds_fill_it_exactly(tenant):
    """Twelve consumes of 0.9 million million at once on an uncapped feature: a counter holds
    about 9.2 million million, so exactly ten are counted and the others are refused."""
    c = tenant.client
    await feature(c, "tokens")
    await plan(c, "unlimited", [metered("tokens", 0, None, None)])
    await customer(c, "acme")
    await subscribe(c, "acme", "unlimited")
    await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "tokens", "consume": True}))
    body = {"customer": "acme", "feature": "tokens", "quantity": 900_000_000_000, "consume": True}
    answers = await asyncio.gather(*(c.post("/v1/check", json=body) for _ in range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    assert sorted(a.json()["decision"] for a in answers) == ["allow"] * 10 + ["deny"] * 2
    assert {a.json()["reason"] for a in answers if a.json()["decision"] == "deny"} == {"counter_full"}
    state = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert state["usage"] == 9_000_000_000_001
