"""Per-customer overrides and ad-hoc entitlements."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

from tests.entitlements.catalogue import (
    boolean,
    customer,
    feature,
    metered,
    ok,
    open_rows,
    plan,
    rows,
    subscribe,
)


async def _on_starter(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await feature(c, "sso")
    await plan(c, "starter", [metered("api-calls", 1000, 1000, 1200)])
    await plan(c, "pro", [metered("api-calls", 10_000, 10_000, 15_000), boolean("sso")])
    acme = await customer(c, "acme")
    return acme, await subscribe(c, "acme", "starter")


async def test_override_replaces_only_the_values_sent(tenant, db):
    """Raising the hard limit keeps the plan's included units and soft limit."""
    acme, _ = await _on_starter(tenant.client)
    body = await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override",
                                            json={"hard_limit": 5000}))
    assert (body["source"], body["included"], body["soft_limit"], body["hard_limit"]) == ("override", 1000, 1000, 5000)
    (row,) = await open_rows(db, tenant.id, acme["id"])
    assert (row.source, row.hard_limit) == ("override", Decimal(5000))


async def _consume(c, quantity):  # type: ignore[no-untyped-def]
    body = {"customer": "acme", "feature": "api-calls", "quantity": quantity, "consume": True}
    return await ok(await c.post("/v1/check", json=body))


async def test_usage_of_the_period_survives_an_override_and_a_plan_change(tenant):
    """Raising a limit or upgrading mid-period never hands back what was already used."""
    c = tenant.client
    _, sub = await _on_starter(c)
    await _consume(c, 900)
    await ok(await c.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (state["usage"], state["hard_limit"]) == (900, 5000)
    assert (await _consume(c, 200))["usage"] == 1100
    await ok(await c.delete("/v1/customers/acme/entitlements/api-calls/override"), 204)
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (state["usage"], state["included"], state["hard_limit"]) == (1100, 10_000, 15_000)
    assert (await _consume(c, 13_901))["decision"] == "deny"  # 1,100 + 13,901 passes 15,000


async def test_override_survives_a_plan_change(tenant, db):
    """After a change to pro the override still holds; pro's other features are provisioned."""
    acme, sub = await _on_starter(tenant.client)
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    live = {r.kind: r for r in await open_rows(db, tenant.id, acme["id"])}
    assert (live["metered"].source, live["metered"].hard_limit) == ("override", Decimal(5000))
    assert live["boolean"].source == "plan"


async def test_canceling_the_subscription_now_ends_an_override_of_its_plan(tenant, db):
    """An override replaces a plan's values: with the plan canceled, the customer has nothing."""
    acme, sub = await _on_starter(tenant.client)
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "now"}))
    assert await open_rows(db, tenant.id, acme["id"]) == []
    answer = await ok(await tenant.client.post("/v1/check", json={"customer": "acme", "feature": "api-calls"}))
    assert (answer["decision"], answer["reason"]) == ("deny", "not_entitled")


async def test_an_override_ends_with_a_subscription_canceled_at_period_end(tenant, db):
    """The override holds until the period ends, then nothing does."""
    acme, sub = await _on_starter(tenant.client)
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    canceled = await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "period_end"}))
    (row,) = [r for r in await rows(db, tenant.id, acme["id"]) if r.source == "override"]
    assert (row.hard_limit, row.active_to) == (Decimal(5000), datetime.fromisoformat(canceled["ends_at"]))
    assert [r.source for r in await rows(db, tenant.id, acme["id"]) if r.active_to is None] == []


async def test_an_override_ends_when_the_plan_changes_to_one_without_the_feature(tenant, db):
    """Changing to a plan that does not give the feature ends the override with the old plan."""
    acme, sub = await _on_starter(tenant.client)
    await plan(tenant.client, "sso-only", [boolean("sso")])
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "sso-only"}))
    assert [(r.kind, r.source) for r in await open_rows(db, tenant.id, acme["id"])] == [("boolean", "plan")]


async def test_an_override_outlives_a_cancel_at_period_end_that_a_plan_change_undoes(tenant, db):
    """Canceled at period end, then changed now to a plan with the feature: the override stays open."""
    acme, sub = await _on_starter(tenant.client)
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "period_end"}))
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    live = {r.kind: r for r in await open_rows(db, tenant.id, acme["id"])}
    assert (live["metered"].source, live["metered"].hard_limit, live["metered"].active_to) == (
        "override", Decimal(5000), None)


async def test_removing_an_override_gives_the_feature_back_to_the_plan(tenant, db):
    acme, _ = await _on_starter(tenant.client)
    await ok(await tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 5000}))
    assert (await tenant.client.delete("/v1/customers/acme/entitlements/api-calls/override")).status_code == 204
    (row,) = await open_rows(db, tenant.id, acme["id"])
    assert (row.source, row.hard_limit) == ("plan", Decimal(1200))
    assert (await tenant.client.delete("/v1/customers/acme/entitlements/api-calls/override")).status_code == 404


async def test_override_of_a_feature_the_customer_does_not_have_is_404(tenant):
    await _on_starter(tenant.client)
    resp = await tenant.client.put("/v1/customers/acme/entitlements/sso/override", json={"has_access": False})
    assert resp.status_code == 404 and "acme/sso" in resp.json()["detail"]


async def test_adhoc_entitlement_without_any_plan(tenant, db):
    """A customer with no subscription gets one feature; removing it ends it."""
    c = tenant.client
    await feature(c, "beta-access")
    acme = await customer(c, "acme")
    body = await ok(await c.post("/v1/customers/acme/entitlements",
                                 json={"feature": "beta-access", "kind": "boolean"}), 201)
    assert (body["source"], body["subscription_id"], body["has_access"]) == ("adhoc", None, True)
    assert [r.source for r in await open_rows(db, tenant.id, acme["id"])] == ["adhoc"]
    assert (await c.delete("/v1/customers/acme/entitlements/beta-access")).status_code == 204
    assert await open_rows(db, tenant.id, acme["id"]) == []


async def test_an_archived_features_entitlement_can_still_be_removed_by_its_key(tenant, db):
    c = tenant.client
    await feature(c, "beta-access")
    acme = await customer(c, "acme")
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "beta-access", "kind": "boolean"}), 201)
    await ok(await c.delete("/v1/features/beta-access"), 204)
    assert (await c.delete("/v1/customers/acme/entitlements/beta-access")).status_code == 204
    assert await open_rows(db, tenant.id, acme["id"]) == []
    assert (await c.delete("/v1/customers/acme/entitlements/beta-access")).status_code == 404


async def test_adhoc_entitlement_survives_a_plan_that_includes_the_feature(tenant, db):
    acme, sub = await _on_starter(tenant.client)
    await ok(await tenant.client.post("/v1/customers/acme/entitlements",
                                      json={"feature": "sso", "kind": "boolean"}), 201)
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    live = {r.kind: r.source for r in await open_rows(db, tenant.id, acme["id"])}
    assert live == {"metered": "plan", "boolean": "adhoc"}


async def test_adhoc_for_a_feature_the_plan_already_gives_is_409(tenant):
    await _on_starter(tenant.client)
    resp = await tenant.client.post("/v1/customers/acme/entitlements",
                                    json={"feature": "api-calls", "kind": "metered", "included": 5})
    assert resp.status_code == 409


async def test_concurrent_overrides_leave_one_open_row(tenant, db):
    """Racing overrides of one feature either apply in turn or get a 409; one row stays open."""
    acme, _ = await _on_starter(tenant.client)
    puts = [tenant.client.put("/v1/customers/acme/entitlements/api-calls/override", json={"hard_limit": 2000 + i})
            for i in range(6)]
    statuses = {r.status_code for r in await asyncio.gather(*puts)}
    assert 200 in statuses and statuses <= {200, 409}
    assert [r.source for r in await open_rows(db, tenant.id, acme["id"])] == ["override"]
