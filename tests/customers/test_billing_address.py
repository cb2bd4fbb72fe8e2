"""A customer's billing address is kept as sent, changed by an update and cleared by null."""

from __future__ import annotations

ADDRESS = {"country": "DE", "postal_code": "10115", "state": "Berlin", "city": "Berlin",
           "line1": "Invalidenstraße 1", "line2": "3rd floor", "phone_number": "+49 30 1234567"}


async def test_a_billing_address_is_answered_as_sent_and_cleared_by_null(tenant):
    c = tenant.client
    created = await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "billing_address": ADDRESS})
    assert created.status_code == 201, created.text
    assert created.json()["billing_address"] == ADDRESS
    moved = await c.patch("/v1/customers/acme", json={"billing_address": {"country": "FR", "city": "Paris"}})
    paris = {**dict.fromkeys(ADDRESS), "country": "FR", "city": "Paris"}  # parts not sent are null
    assert moved.json()["billing_address"] == paris
    assert (await c.get("/v1/customers/acme")).json()["billing_address"] == paris
    cleared = await c.patch("/v1/customers/acme", json={"billing_address": None})
    assert cleared.json()["billing_address"] is None


async def test_a_country_that_is_not_two_capital_letters_is_a_422_naming_it(tenant):
    resp = await tenant.client.post("/v1/customers", json={"key": "acme", "name": "Acme",
                                                           "billing_address": {"country": "Germany"}})
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["billing_address.country"]
