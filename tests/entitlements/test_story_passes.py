"""Story 5: passes. All-access members have every feature; limited members get one pool entry
a week and pay per extra; riders prepay rides and see how many are left."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.entitlements.catalogue import boolean, customer, feature, ok, plan, subscribe

BERLIN = ZoneInfo("Europe/Berlin")


async def _check(c: Any, who: str, what: str, *, consume: bool = False) -> Any:
    body = {"customer": who, "feature": what, "consume": consume}
    return await ok(await c.post("/v1/check", json=body))


def _weekly_pool() -> dict[str, Any]:
    return {"feature": "pool", "kind": "metered", "usage_period": "WEEK", "included": 1}


async def _gym(c: Any) -> None:
    for key in ("pool", "sauna", "classes"):
        await feature(c, key)
    await plan(c, "all-access", [boolean("pool"), boolean("sauna"), boolean("classes")])
    await plan(c, "limited", [_weekly_pool()])


async def test_all_access_members_may_use_everything_and_limited_ones_only_their_pass(tenant):
    c = tenant.client
    await _gym(c)
    for who, tier in (("ann", "all-access"), ("bob", "limited")):
        await customer(c, who)
        await subscribe(c, who, tier)
    for what in ("pool", "sauna", "classes"):
        assert (await _check(c, "ann", what))["decision"] == "allow"
    sauna = await _check(c, "bob", "sauna")
    assert (sauna["decision"], sauna["reason"]) == ("deny", "not_entitled")


async def test_a_limited_member_has_one_pool_entry_a_week_and_pays_for_each_extra(tenant):
    """The week runs from the subscription's start on the Berlin wall clock; the first entry is
    the pass, each further one is allowed and flagged (billed), and the member sees it."""
    c = tenant.client
    await _gym(c)
    await customer(c, "bob")
    monday = datetime.now(BERLIN).replace(hour=6, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    await subscribe(c, "bob", "limited", starts_at=monday.isoformat(), time_zone="Europe/Berlin")
    first = await _check(c, "bob", "pool", consume=True)
    assert (first["decision"], first["usage"], first["balance"]) == ("allow", 1, 0)
    start, end = (datetime.fromisoformat(first[k]).astimezone(BERLIN) for k in ("period_start", "period_end"))
    assert (start, end.replace(tzinfo=None) - start.replace(tzinfo=None)) == (monday, timedelta(days=7))
    extra = await _check(c, "bob", "pool", consume=True)
    assert (extra["decision"], extra["reason"], extra["overage"]) == ("allow_overdraft", "soft_limit", 1)
    seen = await ok(await c.get("/v1/customers/bob/entitlements/pool"))
    assert (seen["usage"], seen["balance"], seen["overage"]) == (2, 0, 1)


async def test_a_rider_spends_prepaid_rides_and_is_refused_at_zero_until_topping_up(tenant):
    c = tenant.client
    await feature(c, "rides")
    await customer(c, "cara")
    adhoc = {"feature": "rides", "kind": "metered", "usage_period": "NONE", "included": 0, "hard_limit": 0}
    await ok(await c.post("/v1/customers/cara/entitlements", json=adhoc), 201)
    grants = "/v1/customers/cara/entitlements/rides/grants"
    await ok(await c.post(grants, json={"amount": 10}), 201)
    for _ in range(10):
        assert (await _check(c, "cara", "rides", consume=True))["decision"] == "allow"
    refused = await _check(c, "cara", "rides", consume=True)
    assert (refused["decision"], refused["reason"], refused["usage"], refused["balance"]) == ("deny", "hard_limit", 10, 0)
    await ok(await c.post(grants, json={"amount": 5}), 201)
    ride = await _check(c, "cara", "rides", consume=True)
    assert (ride["decision"], ride["usage"], ride["balance"]) == ("allow", 11, 4)
