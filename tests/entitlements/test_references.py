"""What something still refers to cannot be deleted from under it: 409 naming the reference."""

from __future__ import annotations

from datetime import timedelta

from allotment.types import utcnow
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.helpers import meter


async def _subscribed(c, **extra):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 10, 10, 20)])
    await customer(c, "acme")
    return await subscribe(c, "acme", "starter", **extra)


async def test_a_customer_with_a_live_subscription_is_not_deleted(tenant):
    c = tenant.client
    sub = await _subscribed(c)
    for path in ("/v1/customers/acme", "/api/v1/customers/acme"):
        resp = await c.delete(path)
        assert resp.status_code == 409, resp.text
        assert sub["id"] in resp.json()["detail"]
    assert (await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls"})).status_code == 200
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}))
    await ok(await c.delete("/v1/customers/acme"), 204)
    assert (await c.get("/v1/customers/acme")).status_code == 404


async def test_a_customer_with_a_scheduled_subscription_is_not_deleted(tenant):
    starts = (utcnow() + timedelta(days=3)).isoformat()
    await _subscribed(tenant.client, starts_at=starts)
    resp = await tenant.client.delete("/v1/customers/acme")
    assert (resp.status_code, resp.json()["type"]) == (409, "customer_in_use")


async def test_a_meter_feeding_a_live_feature_is_not_deleted(tenant):
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await feature(c, "tokens", meter="tokens")
    for path in ("/v1/meters/tokens", "/api/v1/meters/tokens"):
        resp = await c.delete(path)
        assert resp.status_code == 409, resp.text
        assert "'tokens'" in resp.json()["detail"]
    assert (await c.delete("/v1/meters/tokens")).json()["type"] == "meter_in_use"
    await ok(await c.delete("/v1/features/tokens"), 204)  # archived
    await ok(await c.delete("/v1/meters/tokens"), 204)
