"""Plans: versions, drafts and publishing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe


async def test_plan_is_created_as_a_draft_version_1(tenant):
    """A new plan is a draft until published; its entitlements are returned with feature keys."""
    c = tenant.client
    await feature(c, "api-calls")
    body = await plan(c, "pro", [metered("api-calls", 1000, 1000, 1200)], publish=False,
                      billing_interval="month", currency="EUR")
    assert (body["version"], body["status"], body["currency"]) == (1, "draft", "EUR")
    assert body["entitlements"] == [{
        "feature": "api-calls", "kind": "metered", "has_access": True, "config": None,
        "usage_period": "MONTH", "included": 1000, "soft_limit": 1000, "hard_limit": 1200,
        "overage_at_reset": "forgive", "included_rollover": None, "lease_ttl_seconds": None,
    }]
    assert (await c.get("/v1/plans/pro")).status_code == 404  # nothing published yet
    assert (await ok(await c.get("/v1/plans/pro?version=1")))["status"] == "draft"


async def test_posting_an_existing_key_creates_the_next_draft_version(tenant):
    """Publishing v2 archives v1; GET returns the latest published version."""
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "pro", [metered("api-calls", 1000)])
    v2 = await plan(c, "pro", [metered("api-calls", 2000)], publish=False)
    assert (v2["version"], v2["status"]) == (2, "draft")
    assert (await ok(await c.get("/v1/plans/pro")))["version"] == 1
    await ok(await c.post("/v1/plans/pro/publish"))
    latest = await ok(await c.get("/v1/plans/pro"))
    assert (latest["version"], latest["entitlements"][0]["included"]) == (2, 2000)
    assert (await ok(await c.get("/v1/plans/pro?version=1")))["status"] == "archived"


async def test_second_draft_while_one_is_open_is_409(tenant):
    await plan(tenant.client, "pro", [], publish=False)
    assert (await tenant.client.post("/v1/plans", json={"key": "pro", "name": "Pro"})).status_code == 409


async def test_publishing_without_a_draft_is_409(tenant):
    await plan(tenant.client, "pro", [])
    assert (await tenant.client.post("/v1/plans/pro/publish")).status_code == 409


async def test_publishing_v2_leaves_subscriptions_on_v1_until_migrated(tenant):
    """Existing subscriptions keep their version; migrate moves them and their entitlements."""
    c = tenant.client
    await feature(c, "api-calls")
    await customer(c, "acme")
    await plan(c, "pro", [metered("api-calls", 1000)])
    sub = await subscribe(c, "acme", "pro")
    await plan(c, "pro", [metered("api-calls", 5000)])
    assert (await ok(await c.get(f"/v1/subscriptions/{sub['id']}")))["plan_version"] == 1
    migrated = await ok(await c.post(f"/v1/subscriptions/{sub['id']}/migrate"))
    assert (migrated["id"], migrated["plan_version"]) == (sub["id"], 2)


async def test_next_tier_names_an_existing_plan(tenant):
    c = tenant.client
    await plan(c, "team", [])
    body = await plan(c, "starter", [], next_tier="team")
    assert body["next_tier"] == "team"
    resp = await c.post("/v1/plans", json={"key": "pro", "name": "Pro", "next_tier": "enterprise"})
    assert resp.status_code == 404 and "enterprise" in resp.json()["detail"]


async def test_plan_lists_every_version(tenant):
    c = tenant.client
    await feature(c, "sso")
    await plan(c, "pro", [boolean("sso")])
    await plan(c, "pro", [], publish=False)
    items = (await ok(await c.get("/v1/plans?key=pro")))["items"]
    assert [(p["version"], p["status"]) for p in items] == [(1, "published"), (2, "draft")]


async def test_a_plan_keeps_its_description(tenant):
    """Shown on every read of the version."""
    await plan(tenant.client, "pro", [], description="For teams")
    assert (await ok(await tenant.client.get("/v1/plans/pro")))["description"] == "For teams"


async def test_a_weekly_plans_subscription_canceled_at_period_end_ends_a_week_after_its_anchor(tenant):
    """billing_interval week: billing periods are weeks from the billing anchor."""
    c = tenant.client
    await customer(c, "acme")
    await plan(c, "weekly", [], billing_interval="week")
    anchor = datetime.now(UTC) - timedelta(days=2)
    sub = await subscribe(c, "acme", "weekly", starts_at=anchor.isoformat())
    canceled = await ok(await c.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "period_end"}))
    assert datetime.fromisoformat(canceled["ends_at"]) == anchor + timedelta(days=7)
