"""Usage resets by hand (`POST /v1/customers/{c}/entitlements/{f}/reset`)."""

from __future__ import annotations

from typing import Any

from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe

_RESET = "/v1/customers/acme/entitlements/api-calls/reset"


async def _adhoc(c: Any, **values: Any) -> dict[str, Any]:
    await feature(c, "api-calls")
    await customer(c, "acme")
    body = {**metered("api-calls", 10, hard=10), **values}
    return await ok(await c.post("/v1/customers/acme/entitlements", json=body), 201)  # type: ignore[no-any-return]


async def _consume(c: Any, quantity: int) -> dict[str, Any]:
    body = {"customer": "acme", "feature": "api-calls", "quantity": quantity, "consume": True}
    return await ok(await c.post("/v1/check", json=body))  # type: ignore[no-any-return]


async def test_reset_gives_back_an_exhausted_period(tenant):
    """A hard limit reached; after a reset the customer consumes from zero again."""
    c = tenant.client
    old = await _adhoc(c)
    assert (await _consume(c, 10))["decision"] == "allow"
    assert (await _consume(c, 1))["decision"] == "deny"
    new = await ok(await c.post(_RESET, json={}))
    assert new["id"] != old["id"] and new["usage_anchor"] == new["active_from"]
    after = await _consume(c, 4)
    assert (after["decision"], after["usage"]) == ("allow", 4)


async def test_reset_with_retained_anchor_keeps_the_period_end(tenant):
    """The new period ends where the interrupted one would have."""
    c = tenant.client
    await _adhoc(c, usage_anchor="2024-01-15T00:00:00Z")
    before = await _consume(c, 3)
    new = await ok(await c.post(_RESET, json={"retain_anchor": True}))
    assert new["usage_anchor"] == "2024-01-15T00:00:00Z"
    after = await _consume(c, 1)
    assert (after["usage"], after["period_end"]) == (1, before["period_end"])


async def test_reset_rolls_over_unused_included_units(tenant):
    """Included units left unused roll into the new period up to `included_rollover`."""
    c = tenant.client
    await _adhoc(c, hard_limit=None, included_rollover=4)
    await _consume(c, 3)
    await ok(await c.post(_RESET, json={}))
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (state["usage"], state["balance"]) == (0, 14)


async def test_reset_honours_the_idempotency_key(tenant):
    """A retried reset answers the first reset again and does not reset a second time."""
    c = tenant.client
    await _adhoc(c)
    headers = {"Idempotency-Key": "reset-1"}
    first = await c.post(_RESET, json={}, headers=headers)
    await _consume(c, 3)
    retry = await c.post(_RESET, json={}, headers=headers)
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    state = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert state["usage"] == 3


async def test_reset_of_a_plan_entitlement_is_a_conflict(tenant):
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 100, 100, 100)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")
    assert (await c.post(_RESET, json={})).status_code == 409


async def test_reset_of_a_boolean_entitlement_is_a_422_naming_feature(tenant):
    c = tenant.client
    await feature(c, "api-calls")
    await customer(c, "acme")
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "api-calls", "kind": "boolean"}), 201)
    resp = await c.post(_RESET, json={})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "feature"


async def test_reset_with_an_unknown_field_is_refused(tenant):
    c = tenant.client
    await _adhoc(c)
    resp = await c.post(_RESET, json={"effective_at": "2024-01-01T00:00:00Z"})
    assert resp.status_code in (400, 422) and resp.json()["errors"][0]["field"] == "effective_at"
