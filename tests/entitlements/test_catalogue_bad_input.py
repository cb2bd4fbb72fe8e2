"""Bad catalogue input gets a 4xx problem naming the field or the missing thing."""

from __future__ import annotations

from tests.api.test_bad_input import assert_problem
from tests.entitlements.catalogue import customer, feature, metered, plan, subscribe


async def test_plan_with_unknown_feature_is_404(tenant):
    resp = await tenant.client.post("/v1/plans", json={"key": "pro", "name": "Pro", "entitlements": [metered("nope", 1)]})
    assert_problem(resp, 404)
    assert resp.json()["type"] == "feature_not_found" and "nope" in resp.json()["detail"]


async def test_subscription_to_unknown_plan_or_customer_is_404(tenant):
    c = tenant.client
    await customer(c, "acme")
    await plan(c, "pro", [])
    assert (await c.post("/v1/subscriptions", json={"customer": "acme", "plan": "nope"})).json()["type"] == "plan_not_found"
    resp = await c.post("/v1/subscriptions", json={"customer": "ghost", "plan": "pro"})
    assert_problem(resp, 404)
    assert resp.json()["type"] == "customer_not_found"


async def test_subscription_to_an_unpublished_plan_is_409(tenant):
    await customer(tenant.client, "acme")
    await plan(tenant.client, "pro", [], publish=False)
    assert_problem(await tenant.client.post("/v1/subscriptions", json={"customer": "acme", "plan": "pro"}), 409)


async def test_negative_limit_names_the_field(tenant):
    await feature(tenant.client, "api-calls")
    body = {"key": "pro", "name": "Pro", "entitlements": [metered("api-calls", -5)]}
    assert_problem(await tenant.client.post("/v1/plans", json=body), 422, "entitlements[0].included")


async def test_hard_limit_below_soft_limit_names_the_field(tenant):
    await feature(tenant.client, "api-calls")
    body = {"key": "pro", "name": "Pro", "entitlements": [metered("api-calls", 100, 200, 150)]}
    assert_problem(await tenant.client.post("/v1/plans", json=body), 422, "entitlements[0].hard_limit")
    assert (await tenant.client.get("/v1/plans?key=pro")).json()["items"] == []  # nothing half-written


async def test_field_of_another_kind_names_the_field(tenant):
    await feature(tenant.client, "sso")
    body = {"key": "pro", "name": "Pro", "entitlements": [{"feature": "sso", "kind": "boolean", "hard_limit": 3}]}
    assert_problem(await tenant.client.post("/v1/plans", json=body), 422, "entitlements[0].hard_limit")


async def test_static_without_config_names_the_field(tenant):
    await feature(tenant.client, "projects")
    body = {"key": "pro", "name": "Pro", "entitlements": [{"feature": "projects", "kind": "static"}]}
    assert_problem(await tenant.client.post("/v1/plans", json=body), 422, "entitlements[0].config")


async def test_override_with_hard_below_soft_names_the_field(tenant):
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "pro", [metered("api-calls", 100, 100, 150)])
    await customer(c, "acme")
    await subscribe(c, "acme", "pro")
    resp = await c.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 50})
    assert_problem(resp, 422, "hard_limit")


async def test_bad_time_zone_names_the_field(tenant):
    await customer(tenant.client, "acme")
    await plan(tenant.client, "pro", [])
    resp = await tenant.client.post("/v1/subscriptions", json={"customer": "acme", "plan": "pro", "time_zone": "Mars/Olympus"})
    assert_problem(resp, 422, "time_zone")


async def test_naive_start_time_names_the_field(tenant):
    await customer(tenant.client, "acme")
    await plan(tenant.client, "pro", [])
    body = {"customer": "acme", "plan": "pro", "starts_at": "2024-01-01T00:00:00"}
    assert_problem(await tenant.client.post("/v1/subscriptions", json=body), 422, "starts_at")


async def test_change_plan_with_unknown_when_names_the_field(tenant):
    await customer(tenant.client, "acme")
    await plan(tenant.client, "pro", [])
    sub = await subscribe(tenant.client, "acme", "pro")
    resp = await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro", "at": "tomorrow"})
    assert_problem(resp, 422, "at")


async def test_unknown_subscription_is_404(tenant):
    assert_problem(await tenant.client.post("/v1/subscriptions/sub_nope/cancel", json={}), 404)


async def test_override_for_unknown_customer_or_feature_is_404(tenant):
    await feature(tenant.client, "sso")
    await customer(tenant.client, "acme")
    assert (await tenant.client.put("/v1/customers/ghost/entitlements/sso/override", json={})).json()["type"] == "customer_not_found"
    assert (await tenant.client.put("/v1/customers/acme/entitlements/nope/override", json={})).json()["type"] == "feature_not_found"
