"""Every admin change of the catalogue is in the audit log, with before and after."""

from __future__ import annotations

from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe


async def _log(c, **filters):  # type: ignore[no-untyped-def]
    return (await ok(await c.get("/v1/audit-log", params=filters)))["items"]


async def test_feature_update_is_logged_with_before_and_after(tenant):
    c = tenant.client
    created = await feature(c, "sso", name="SSO")
    await ok(await c.patch("/v1/features/sso", json={"name": "Single sign-on"}))
    entries = {e["action"]: e for e in await _log(c, entity_type="feature", entity_id=created["id"])}
    assert set(entries) == {"feature.created", "feature.updated"}
    update = entries["feature.updated"]
    assert (update["before"]["name"], update["after"]["name"]) == ("SSO", "Single sign-on")
    (admin_key,) = (await ok(await c.get("/v1/api-keys")))["items"]
    assert update["actor"] == admin_key["id"]
    assert entries["feature.created"]["before"] is None


async def test_subscription_changes_are_logged(tenant):
    """Creation, plan change and the entitlements they provision each leave a row."""
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 1000)])
    await plan(c, "pro", [metered("api-calls", 5000)])
    await customer(c, "acme")
    sub = await subscribe(c, "acme", "starter")
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    actions = [e["action"] for e in await _log(c, entity_id=sub["id"])]
    assert sorted(actions) == ["subscription.created", "subscription.plan_changed"]
    changed = (await _log(c, action="subscription.plan_changed"))[0]
    assert changed["before"]["ends_at"] is None and changed["after"]["ends_at"] is not None
    provisioned = await _log(c, entity_type="customer_entitlement", action="entitlement.provisioned")
    assert sorted(e["after"]["included"] for e in provisioned) == [1000, 5000]


async def test_override_is_logged_with_the_plan_value_it_replaced(tenant):
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 1000, 1000, 1200)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")
    await ok(await c.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 3000}))
    (entry,) = await _log(c, action="entitlement.overridden")
    assert (entry["before"]["source"], entry["before"]["hard_limit"]) == ("plan", 1200)
    assert (entry["after"]["source"], entry["after"]["hard_limit"]) == ("override", 3000)


async def test_customers_meters_and_api_keys_changes_are_logged(tenant):
    """Re-pointing a customer's subjects changes who pays for events: it must leave a trace,
    as must meters and keys (never a key's secret or its hash)."""
    c = tenant.client
    (admin_key,) = (await ok(await c.get("/v1/api-keys")))["items"]
    made = await ok(await c.post("/v1/customers", json={"key": "aud", "name": "Before"}), 201)
    await ok(await c.patch("/v1/customers/aud", json={"name": "After", "subject_keys": ["aud-1"]}))
    await ok(await c.delete("/v1/customers/aud"), 204)
    entries = await _log(c, entity_id=made["id"])
    assert sorted(e["action"] for e in entries) == ["customer.created", "customer.deleted", "customer.updated"]
    updated = next(e for e in entries if e["action"] == "customer.updated")
    assert (updated["before"]["subject_keys"], updated["after"]["subject_keys"]) == ([], ["aud-1"])
    assert (updated["before"]["name"], updated["after"]["name"], updated["actor"]) == ("Before", "After", admin_key["id"])
    meter = await ok(await c.post("/v1/meters", json={"key": "audm", "event_type": "audt", "aggregation": "COUNT"}), 201)
    await ok(await c.delete("/v1/meters/audm"), 204)
    assert sorted(e["action"] for e in await _log(c, entity_id=meter["id"])) == ["meter.created", "meter.deleted"]
    key = await ok(await c.post("/v1/api-keys", json={"name": "aud", "scope": "read"}), 201)
    await ok(await c.post(f"/v1/api-keys/{key['id']}/revoke"))
    logged = await _log(c, entity_id=key["id"])
    assert sorted(e["action"] for e in logged) == ["api_key.created", "api_key.revoked"]
    assert all("secret_hash" not in (e["after"] or {}) and key["secret"] not in str(e) for e in logged)


async def test_audit_log_needs_an_admin_key(tenant, db):
    read_key = await tenant.key("read", db)
    resp = await tenant.client.get("/v1/audit-log", headers={"Authorization": f"Bearer {read_key}"})
    assert resp.status_code == 403
