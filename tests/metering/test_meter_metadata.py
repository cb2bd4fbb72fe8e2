"""A meter's own key-values: set on the native API, answered by it and by the OpenMeter surface."""

from __future__ import annotations

from tests.helpers import meter


async def test_metadata_given_at_creation_is_answered_as_sent_by_both_surfaces(tenant):
    """Text to text, kept as sent, and the same map whichever API reads the meter."""
    c = tenant.client
    created = await c.post("/v1/meters", json=meter(metadata={"team": "billing", "tier": "1"}))
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == {"team": "billing", "tier": "1"}
    assert (await c.get("/v1/meters/tokens")).json()["metadata"] == {"team": "billing", "tier": "1"}
    assert (await c.get("/api/v1/meters/tokens")).json()["metadata"] == {"team": "billing", "tier": "1"}


async def test_a_meter_made_without_metadata_has_none_until_an_update_sets_it(tenant):
    """An update replaces the map; one that leaves it out keeps it."""
    c = tenant.client
    assert (await c.post("/v1/meters", json=meter())).json()["metadata"] is None
    updated = await c.patch("/v1/meters/tokens", json={"metadata": {"owner": "ops"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["metadata"] == {"owner": "ops"}
    renamed = await c.patch("/v1/meters/tokens", json={"name": "Tokens"})
    assert renamed.json()["metadata"] == {"owner": "ops"}


async def test_metadata_that_is_not_text_is_a_422_naming_the_key(tenant):
    resp = await tenant.client.post("/v1/meters", json=meter(metadata={"tier": 1}))
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["metadata.tier"]
    assert (await tenant.client.get("/v1/meters/tokens")).status_code == 404
