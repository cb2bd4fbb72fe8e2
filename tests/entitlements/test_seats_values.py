"""Seats count items (users, devices, licences): their included units and limits are whole."""

from __future__ import annotations

from tests.entitlements.catalogue import customer, feature, ok, plan, subscribe


def _refused(resp, field):  # type: ignore[no-untyped-def]
    assert resp.status_code == 422, resp.text
    assert field in [e["field"] for e in resp.json()["errors"]], resp.json()


async def test_a_plan_with_half_a_seat_included_is_422_naming_the_field(tenant):
    """`included: 1.5` seats is refused, naming entitlements[0].included."""
    await feature(tenant.client, "seats")
    body = {"key": "team", "name": "Team", "entitlements": [{"feature": "seats", "kind": "seats", "included": 1.5}]}
    _refused(await tenant.client.post("/v1/plans", json=body), "entitlements[0].included")


async def test_an_adhoc_seat_limit_with_a_fraction_is_422_naming_the_field(tenant):
    """A hard limit of 2.5 seats is refused, naming hard_limit."""
    await feature(tenant.client, "seats")
    await customer(tenant.client, "acme")
    body = {"feature": "seats", "kind": "seats", "included": 2, "hard_limit": "2.5"}
    _refused(await tenant.client.post("/v1/customers/acme/entitlements", json=body), "hard_limit")


async def test_an_override_of_a_seat_soft_limit_with_a_fraction_is_422(tenant):
    """An override cannot give a customer 3.5 seats before overdraft."""
    c = tenant.client
    await feature(c, "seats")
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": 3, "hard_limit": 5}])
    await customer(c, "acme")
    await subscribe(c, "acme", "team")
    _refused(await c.put("/v1/customers/acme/entitlements/seats/override", json={"soft_limit": 3.5}), "soft_limit")


async def test_whole_seat_counts_written_with_a_decimal_point_are_taken(tenant):
    """`5.0` seats is five seats."""
    await feature(tenant.client, "seats")
    await customer(tenant.client, "acme")
    body = {"feature": "seats", "kind": "seats", "included": 5.0, "hard_limit": "6.000"}
    made = await ok(await tenant.client.post("/v1/customers/acme/entitlements", json=body), 201)
    assert (made["included"], made["hard_limit"]) == (5, 6)


async def test_metered_entitlements_still_take_fractions(tenant):
    """kWh and GB are divisible: a metered entitlement of 22.5 units is fine."""
    await feature(tenant.client, "kwh")
    await customer(tenant.client, "acme")
    body = {"feature": "kwh", "kind": "metered", "included": 22.5, "hard_limit": "30.25"}
    made = await ok(await tenant.client.post("/v1/customers/acme/entitlements", json=body), 201)
    assert (made["included"], made["hard_limit"]) == (22.5, 30.25)
