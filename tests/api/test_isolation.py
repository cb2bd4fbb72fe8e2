"""A key of one tenant never sees or changes another tenant's data."""

from __future__ import annotations

import pytest
from tests.helpers import event, meter


@pytest.fixture
async def b_world(other_tenant):  # type: ignore[no-untyped-def]
    """Tenant B with a meter, a customer, events and a key of its own."""
    c = other_tenant.client
    assert (await c.post("/v1/meters", json=meter("b-tokens"))).status_code == 201
    assert (await c.post("/v1/customers", json={"key": "b-cust", "name": "B", "subject_keys": ["b-user"]})).status_code == 201
    assert (await c.post("/v1/events", json=[event("b-user", tokens=42, id="b-evt")])).json()["accepted"] == 1
    keys = (await c.get("/v1/api-keys")).json()["items"]
    return {"key_id": keys[0]["id"]}


async def test_other_tenants_resources_are_not_found(tenant, b_world):
    """Reads by key or id of another tenant's resources answer 404, as if they did not exist."""
    c = tenant.client
    for path in ["/v1/meters/b-tokens", "/v1/meters/b-tokens/query", "/v1/customers/b-cust"]:
        resp = await c.get(path)
        assert resp.status_code == 404, (path, resp.text)


async def test_other_tenants_resources_cannot_be_changed(tenant, other_tenant, b_world):
    c = tenant.client
    assert (await c.patch("/v1/meters/b-tokens", json={"name": "mine"})).status_code == 404
    assert (await c.delete("/v1/meters/b-tokens")).status_code == 404
    assert (await c.patch("/v1/customers/b-cust", json={"name": "mine"})).status_code == 404
    assert (await c.delete("/v1/customers/b-cust")).status_code == 404
    assert (await c.post(f"/v1/api-keys/{b_world['key_id']}/revoke")).status_code == 404
    # B is untouched and its key still works.
    assert (await other_tenant.client.get("/v1/meters/b-tokens")).json()["name"] == "b-tokens"
    assert (await other_tenant.client.get("/v1/customers/b-cust")).status_code == 200


async def test_lists_and_events_show_only_own_tenant(tenant, b_world):
    c = tenant.client
    assert (await c.get("/v1/meters")).json()["items"] == []
    assert (await c.get("/v1/customers")).json()["items"] == []
    assert (await c.get("/v1/events")).json()["items"] == []
    assert b_world["key_id"] not in {k["id"] for k in (await c.get("/v1/api-keys")).json()["items"]}


async def test_same_event_identity_in_two_tenants_counts_in_each(tenant, other_tenant, b_world):
    """De-duplication is per tenant: B's event id does not make A's event a duplicate."""
    await tenant.client.post("/v1/meters", json=meter("a-tokens"))
    resp = await tenant.client.post("/v1/events", json=[event("b-user", tokens=1, id="b-evt")])
    assert resp.json()["accepted"] == 1
    q = await other_tenant.client.get("/v1/meters/b-tokens/query")
    assert q.json()["data"][0]["value"] == 42


async def test_same_subject_key_can_belong_to_customers_of_two_tenants(tenant, b_world):
    resp = await tenant.client.post("/v1/customers", json={"key": "a-cust", "name": "A", "subject_keys": ["b-user"]})
    assert resp.status_code == 201


async def test_query_by_other_tenants_customer_is_not_found(tenant, b_world):
    await tenant.client.post("/v1/meters", json=meter("a-tokens"))
    resp = await tenant.client.get("/v1/meters/a-tokens/query", params={"customer": "b-cust"})
    assert resp.status_code == 404
    assert resp.json()["type"] == "customer_not_found"
