"""A customer's entitlement state says what open reservations hold, so its numbers add up."""

from __future__ import annotations

from tests.entitlements.catalogue import customer, feature, ok


async def _prepaid(c):  # type: ignore[no-untyped-def]
    await feature(c, "kwh")
    await customer(c, "driver")
    body = {"feature": "kwh", "kind": "metered", "usage_period": "NONE", "included": 50, "hard_limit": 50}
    await ok(await c.post("/v1/customers/driver/entitlements", json=body), 201)


async def _hold(c, quantity):  # type: ignore[no-untyped-def]
    body = {"customer": "driver", "feature": "kwh", "quantity": quantity, "ttl_seconds": 3600}
    return (await ok(await c.post("/v1/reservations", json=body), 201))["reservation"]


async def test_the_state_shows_what_open_reservations_hold(tenant):
    """usage 0 + reserved 30 + balance 20 = included 50: the hold is named, not hidden in the balance."""
    c = tenant.client
    await _prepaid(c)
    await _hold(c, 30)
    state = await ok(await c.get("/v1/customers/driver/entitlements/kwh"))
    assert (state["usage"], state["reserved"], state["balance"], state["included"]) == (0, 30, 20, 50)


async def test_a_committed_reservation_moves_from_reserved_to_usage(tenant):
    """After a commit of 22.4 of a 30 hold, nothing is reserved and 22.4 is used."""
    c = tenant.client
    await _prepaid(c)
    held = await _hold(c, 30)
    await ok(await c.post(f"/v1/reservations/{held['id']}/commit", json={"quantity": 22.4}))
    listed = await ok(await c.get("/v1/customers/driver/entitlements"))
    state = next(s for s in listed["items"] if s["feature"] == "kwh")
    assert (state["usage"], state["reserved"], state["balance"]) == (22.4, 0, 27.6)


async def test_kinds_that_hold_nothing_report_no_reserved(tenant):
    """A boolean entitlement has no reserved figure (null), as it has no usage."""
    c = tenant.client
    await feature(c, "export-pdf")
    await customer(c, "driver")
    await ok(await c.post("/v1/customers/driver/entitlements", json={"feature": "export-pdf", "kind": "boolean"}), 201)
    state = await ok(await c.get("/v1/customers/driver/entitlements/export-pdf"))
    assert state["reserved"] is None and state["usage"] is None
