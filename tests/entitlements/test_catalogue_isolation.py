"""A tenant never sees or changes another tenant's features, plans or subscriptions."""

from __future__ import annotations

import pytest

from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe


@pytest.fixture
async def b_catalogue(other_tenant):  # type: ignore[no-untyped-def]
    """Tenant B with a feature, a plan and a subscribed customer."""
    c = other_tenant.client
    await feature(c, "b-calls")
    await plan(c, "b-pro", [metered("b-calls", 10)])
    await customer(c, "b-cust")
    return await subscribe(c, "b-cust", "b-pro")


async def test_other_tenants_catalogue_is_not_found(tenant, b_catalogue):
    c = tenant.client
    for path in ["/v1/features/b-calls", "/v1/plans/b-pro", f"/v1/subscriptions/{b_catalogue['id']}"]:
        assert (await c.get(path)).status_code == 404, path
    for path in ["/v1/features", "/v1/plans", "/v1/subscriptions"]:
        assert (await ok(await c.get(path)))["items"] == [], path
    logged = (await ok(await c.get("/v1/audit-log")))["items"]  # only A's own key, made for the test
    (mine,) = (await ok(await c.get("/v1/api-keys")))["items"]
    assert [(e["action"], e["entity_id"]) for e in logged] == [("api_key.created", mine["id"])]


async def test_other_tenants_catalogue_cannot_be_used_or_changed(tenant, other_tenant, b_catalogue):
    """B's plan, feature and subscription are unknown to A, and B's stay as they were."""
    c = tenant.client
    await customer(c, "a-cust")
    sub = b_catalogue["id"]
    assert (await c.post("/v1/subscriptions", json={"customer": "a-cust", "plan": "b-pro"})).status_code == 404
    assert (await c.post("/v1/plans", json={"key": "x", "name": "X", "entitlements": [metered("b-calls", 1)]})).status_code == 404
    assert (await c.post(f"/v1/subscriptions/{sub}/cancel", json={})).status_code == 404
    assert (await c.post(f"/v1/subscriptions/{sub}/change-plan", json={"plan": "b-pro"})).status_code == 404
    assert (await c.post(f"/v1/subscriptions/{sub}/migrate")).status_code == 404
    assert (await c.put("/v1/customers/b-cust/entitlements/b-calls/override", json={"included": 1})).status_code == 404
    assert (await c.delete("/v1/features/b-calls")).status_code == 404
    assert (await c.post("/v1/plans/b-pro/publish")).status_code == 404
    assert (await ok(await other_tenant.client.get(f"/v1/subscriptions/{sub}")))["status"] == "active"
    assert (await other_tenant.client.get("/v1/features/b-calls")).status_code == 200
