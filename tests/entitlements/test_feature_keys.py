"""A feature key names, for each customer, the feature it holds: archiving a feature frees its
key, and a new feature under that key takes nothing away from whoever holds the archived one."""

from __future__ import annotations

from typing import Any

from allotment.entitlements import resolve
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe


async def _check(c: Any, who: str = "acme", **body: Any) -> Any:
    return await ok(await c.post("/v1/check", json={"customer": who, "feature": "kwh", **body}))


async def _archived_and_taken_again(c: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """acme holds `kwh` (10 included, overdraft to 15) on a published plan and has used 1; then
    `kwh` is archived and a new feature takes its key. Returns (archived, new) features."""
    old = await feature(c, "kwh")
    await plan(c, "starter", [metered("kwh", 10, 10, 15)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")
    assert (await _check(c, consume=True))["usage"] == 1  # this process now remembers the pair
    await ok(await c.delete("/v1/features/kwh"), 204)
    return old, await feature(c, "kwh")


async def test_checks_keep_answering_for_an_archived_feature_after_a_new_feature_takes_its_key(tenant):
    """A remembered pair and a pair resolved afresh both still count on the archived feature."""
    c = tenant.client
    await _archived_and_taken_again(c)
    remembered = await _check(c, consume=True)
    assert (remembered["decision"], remembered["usage"], remembered["hard_limit"]) == ("allow", 2, 15)
    resolve._remembered.clear()  # as a process that never saw the pair
    fresh = await _check(c, consume=True)
    assert (fresh["decision"], fresh["usage"]) == ("allow", 3)
    assert (await _check(c, quantity=13))["reason"] == "hard_limit"


async def test_entitlement_reads_find_an_archived_feature_after_a_new_feature_takes_its_key(tenant):
    """The entitlement page, the list, and OpenMeter's value and access all still show it."""
    c = tenant.client
    await _archived_and_taken_again(c)
    page = await ok(await c.get("/v1/customers/acme/entitlements/kwh"))
    assert (page["feature"], page["usage"], page["hard_limit"]) == ("kwh", 1, 15)
    listed = await ok(await c.get("/v1/customers/acme/entitlements"))
    assert [(i["feature"], i["usage"]) for i in listed["items"]] == [("kwh", 1)]
    value = await ok(await c.get("/api/v1/customers/acme/entitlements/kwh/value"))
    assert (value["hasAccess"], value["usage"], value["balance"]) == (True, 1, 9)
    access = await ok(await c.get("/api/v1/customers/acme/access"))
    assert access["entitlements"]["kwh"]["usage"] == 1


async def test_grants_reservations_and_overrides_go_to_the_archived_feature_the_customer_holds(tenant):
    """A top-up, a hold and an override named by the key land on what the customer has."""
    c = tenant.client
    old, _ = await _archived_and_taken_again(c)
    grant = await ok(await c.post("/v1/customers/acme/entitlements/kwh/grants", json={"amount": 5}), 201)
    assert grant["amount"] == 5
    assert (await _check(c))["hard_limit"] == 20
    listed = await ok(await c.get("/v1/customers/acme/entitlements/kwh/grants"))
    assert [g["id"] for g in listed["items"]] == [grant["id"]]
    body = {"customer": "acme", "feature": "kwh", "quantity": 4, "ttl_seconds": 600}
    held = await ok(await c.post("/v1/reservations", json=body), 201)
    assert (held["decision"], held["reserved"], held["reservation"]["feature_id"]) == ("allow", 4, old["id"])
    await ok(await c.put("/v1/customers/acme/entitlements/kwh/override", json={"hard_limit": 30}))
    after = await _check(c)
    assert (after["hard_limit"], after["usage"]) == (35, 1)


async def test_others_get_the_new_feature_and_a_customer_holding_both_gets_the_new_one(tenant):
    """The key names the live feature for anyone without the archived one, and for a customer
    that holds the live one as well (here: an override on the archived feature, then a plan
    with the new one)."""
    c = tenant.client
    await _archived_and_taken_again(c)
    await plan(c, "next", [metered("kwh", 100, 100, 150)])
    await customer(c, "beta")
    await customer(c, "nobody")
    await subscribe(c, "beta", "next")
    assert (await _check(c, "beta"))["included"] == 100
    assert (await _check(c, "nobody"))["reason"] == "not_entitled"
    await ok(await c.put("/v1/customers/acme/entitlements/kwh/override", json={"hard_limit": 20}))
    assert (await _check(c))["hard_limit"] == 20  # remembered: the override on the archived feature
    [sub] = (await ok(await c.get("/v1/subscriptions", params={"customer": "acme"})))["items"]
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "next"}))
    now = await _check(c, consume=True)
    assert (now["included"], now["usage"]) == (100, 1)
    page = await ok(await c.get("/v1/customers/acme/entitlements/kwh"))
    assert (page["included"], page["usage"]) == (100, 1)
