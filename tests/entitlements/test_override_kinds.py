"""An override that changes an entitlement's kind takes the plan's values of that kind for
what it leaves out, as an override of the same kind does."""

from __future__ import annotations

from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe


async def _on_plan(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 1000, None, 1200)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")


async def test_back_to_metered_after_a_boolean_override_takes_the_plan_limits(tenant):
    """boolean, then `{"kind": "metered"}`: the plan's 1,000 included and hard limit of 1,200 again."""
    c = tenant.client
    await _on_plan(c)
    url = "/v1/customers/acme/entitlements/api-calls/override"
    await ok(await c.put(url, json={"kind": "boolean"}))
    made = await ok(await c.put(url, json={"kind": "metered"}))
    assert (made["included"], made["hard_limit"], made["usage_period"]) == (1000, 1200, "MONTH")
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (state["included"], state["soft_limit"], state["hard_limit"]) == (1000, 1000, 1200)


async def test_fields_sent_with_the_kind_win_over_the_plan(tenant):
    """`{"kind": "metered", "hard_limit": 5000}` keeps the plan's included and takes the new cap."""
    c = tenant.client
    await _on_plan(c)
    url = "/v1/customers/acme/entitlements/api-calls/override"
    await ok(await c.put(url, json={"kind": "boolean"}))
    made = await ok(await c.put(url, json={"kind": "metered", "hard_limit": 5000}))
    assert (made["included"], made["hard_limit"]) == (1000, 5000)


async def test_a_kind_the_plan_does_not_give_starts_from_the_kind_defaults(tenant):
    """A boolean plan feature overridden as metered has no plan values to take: included 0, no limits."""
    c = tenant.client
    await feature(c, "export")
    await plan(c, "basic", [boolean("export")])
    await customer(c, "acme")
    await subscribe(c, "acme", "basic")
    made = await ok(await c.put("/v1/customers/acme/entitlements/export/override", json={"kind": "metered"}))
    assert (made["included"], made["soft_limit"], made["hard_limit"]) == (0, None, None)
