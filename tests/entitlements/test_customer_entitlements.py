"""GET /v1/customers/{key}/entitlements: every entitlement's state, read without recording."""

from __future__ import annotations

from datetime import datetime

from allotment.types import utcnow
from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe


async def _provisioned(c):  # type: ignore[no-untyped-def]
    """acme on `pro`: boolean sso, static limits, metered api-calls (10 included, soft 12, hard 15)."""
    for key in ("sso", "limits", "api-calls", "beta"):
        await feature(c, key)
    await plan(c, "pro", [boolean("sso"), {"feature": "limits", "kind": "static", "config": {"rpm": 60}},
                          metered("api-calls", 10, 12, 15)])
    await customer(c, "acme")
    await subscribe(c, "acme", "pro")


async def _consume(c, quantity):  # type: ignore[no-untyped-def]
    body = {"customer": "acme", "feature": "api-calls", "quantity": quantity, "consume": True}
    return await ok(await c.post("/v1/check", json=body))


async def test_list_after_provisioning_a_plan(tenant):
    c = tenant.client
    await _provisioned(c)
    body = await ok(await c.get("/v1/customers/acme/entitlements"))
    assert body["next_cursor"] is None
    items = {i["feature"]: i for i in body["items"]}
    assert list(items) == ["api-calls", "limits", "sso"]  # beta: no entitlement, omitted
    sso, limits, calls = items["sso"], items["limits"], items["api-calls"]
    assert (sso["kind"], sso["has_access"], sso["source"], sso["usage"]) == ("boolean", True, "plan", None)
    assert (limits["kind"], limits["has_access"], limits["config"]) == ("static", True, {"rpm": 60})
    assert {k: calls[k] for k in ("kind", "has_access", "usage", "included", "soft_limit", "hard_limit",
                                  "balance", "overage", "in_overdraft", "source")} == {
        "kind": "metered", "has_access": True, "usage": 0, "included": 10, "soft_limit": 12,
        "hard_limit": 15, "balance": 12, "overage": 0, "in_overdraft": False, "source": "plan"}
    start, end = datetime.fromisoformat(calls["period_start"]), datetime.fromisoformat(calls["period_end"])
    assert start <= utcnow() < end
    one = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert one == calls


async def test_values_follow_consumption_and_reading_records_nothing(tenant):
    c = tenant.client
    await _provisioned(c)
    checked = await _consume(c, 11)
    got = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (got["usage"], got["balance"], got["overage"], got["in_overdraft"]) == (11, 1, 0, False)
    assert (got["period_start"], got["period_end"]) == (checked["period_start"], checked["period_end"])
    await _consume(c, 1.5)
    got = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (got["usage"], got["balance"], got["overage"], got["in_overdraft"]) == (12.5, 0, 0.5, True)
    assert got["has_access"] is True
    await _consume(c, 2.5)
    got = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (got["usage"], got["overage"], got["has_access"]) == (15, 3, False)
    # Reading consumed nothing and recorded no denial.
    await ok(await c.get("/v1/customers/acme/entitlements"))
    assert (await ok(await c.get("/v1/customers/acme/entitlements/api-calls")))["usage"] == 15
    assert (await ok(await c.get("/v1/denials")))["items"] == []


async def test_override_shows_as_its_source_and_value(tenant):
    c = tenant.client
    await _provisioned(c)
    await ok(await c.put("/v1/customers/acme/entitlements/sso/override", json={"has_access": False}))
    got = await ok(await c.get("/v1/customers/acme/entitlements/sso"))
    assert (got["has_access"], got["source"]) == (False, "override")
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "beta", "kind": "boolean"}), 201)
    got = await ok(await c.get("/v1/customers/acme/entitlements/beta"))
    assert (got["has_access"], got["source"]) == (True, "adhoc")


async def test_unknown_customer_feature_or_entitlement_is_404_naming_it(tenant):
    c = tenant.client
    await _provisioned(c)
    for path in ("/v1/customers/nobody/entitlements", "/v1/customers/nobody/entitlements/sso"):
        resp = await c.get(path)
        assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
        assert "nobody" in resp.json()["detail"]
    resp = await c.get("/v1/customers/acme/entitlements/beta")
    assert resp.status_code == 404 and "beta" in resp.json()["detail"], resp.json()
    resp = await c.get("/v1/customers/acme/entitlements/nothing")
    assert resp.status_code == 404 and "nothing" in resp.json()["detail"], resp.json()


async def test_customer_without_entitlements_lists_none(tenant):
    await customer(tenant.client, "bare")
    assert await ok(await tenant.client.get("/v1/customers/bare/entitlements")) == {"items": [], "next_cursor": None}


async def test_a_read_key_can_read(tenant, db):
    await _provisioned(tenant.client)
    await _consume(tenant.client, 3)
    reader = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    body = await ok(await tenant.client.get("/v1/customers/acme/entitlements", headers=reader))
    assert len(body["items"]) == 3
    got = await ok(await tenant.client.get("/v1/customers/acme/entitlements/api-calls", headers=reader))
    assert got["usage"] == 3


async def test_another_tenants_customer_is_not_found(tenant, other_tenant):
    await _provisioned(tenant.client)
    resp = await other_tenant.client.get("/v1/customers/acme/entitlements")
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
    resp = await other_tenant.client.get("/v1/customers/acme/entitlements/api-calls")
    assert resp.status_code == 404
    await _provisioned(other_tenant.client)  # the same keys in the other tenant: separate counters
    await _consume(other_tenant.client, 4)
    mine = await ok(await tenant.client.get("/v1/customers/acme/entitlements/api-calls"))
    theirs = await ok(await other_tenant.client.get("/v1/customers/acme/entitlements/api-calls"))
    assert (mine["usage"], theirs["usage"]) == (0, 4)


async def test_the_list_pages_by_feature_key_as_every_list_does(tenant):
    """`limit` and `cursor` page a customer's entitlements in feature-key order; past 1000 or a
    cursor this API did not give is refused naming the parameter."""
    c = tenant.client
    await _provisioned(c)
    path = "/v1/customers/acme/entitlements"
    first = await ok(await c.get(path, params={"limit": 2}))
    assert [i["feature"] for i in first["items"]] == ["api-calls", "limits"]
    second = await ok(await c.get(path, params={"limit": 2, "cursor": first["next_cursor"]}))
    assert ([i["feature"] for i in second["items"]], second["next_cursor"]) == (["sso"], None)
    for params, status in (({"limit": 1001}, 422), ({"cursor": "bm9wZQ"}, 400), ({"cursor": "YWZ0ZXI6eA"}, 400)):
        refused = await c.get(path, params=params)
        assert (refused.status_code, refused.json()["errors"][0]["field"]) == (status, next(iter(params)))
