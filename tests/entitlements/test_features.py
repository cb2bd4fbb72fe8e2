"""Features: CRUD, the meter link and its group filter."""

from __future__ import annotations

import asyncio

from tests.entitlements.catalogue import feature, ok
from tests.helpers import meter


async def test_feature_linked_to_a_meter_by_key(tenant):
    """A feature names its meter by key and restricts it to one group value."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter("tokens", group_by={"model": "$.model"})), 201)
    body = await feature(c, "gpt-tokens", name="GPT tokens", unit="token", meter="tokens",
                         meter_group_filter={"model": "gpt-4"})
    assert body["id"].startswith("fea_")
    assert (body["meter"], body["meter_group_filter"], body["unit"]) == ("tokens", {"model": "gpt-4"}, "token")
    assert (await ok(await c.get("/v1/features/gpt-tokens")))["meter"] == "tokens"


async def test_feature_list_update_and_archive(tenant):
    """Updates change the name; an archived feature leaves the list and its key can be reused."""
    c = tenant.client
    await feature(c, "export-pdf")
    await feature(c, "sso")
    updated = await ok(await c.patch("/v1/features/sso", json={"name": "Single sign-on"}))
    assert updated["name"] == "Single sign-on"
    assert [f["key"] for f in (await ok(await c.get("/v1/features")))["items"]] == ["export-pdf", "sso"]
    assert (await c.delete("/v1/features/sso")).status_code == 204
    assert (await c.get("/v1/features/sso")).status_code == 404
    assert [f["key"] for f in (await ok(await c.get("/v1/features")))["items"]] == ["export-pdf"]
    await feature(c, "sso")


async def test_duplicate_feature_key_is_409(tenant):
    await feature(tenant.client, "export-pdf")
    resp = await tenant.client.post("/v1/features", json={"key": "export-pdf"})
    assert resp.status_code == 409 and "export-pdf" in resp.json()["detail"]


async def test_feature_with_unknown_meter_is_404(tenant):
    resp = await tenant.client.post("/v1/features", json={"key": "api-calls", "meter": "nope"})
    assert resp.status_code == 404 and resp.json()["type"] == "meter_not_found"


async def test_group_filter_must_name_a_group_of_the_meter(tenant):
    """Filtering on a group the meter does not have is a 422 naming the group."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter("tokens", group_by={"model": "$.model"})), 201)
    resp = await c.post("/v1/features", json={"key": "t", "meter": "tokens", "meter_group_filter": {"region": "eu"}})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "meter_group_filter.region"


async def test_concurrent_creates_of_one_key_make_one_feature(tenant):
    """Requests racing past the duplicate check get a 409 from the unique key, never a 500."""
    posts = [tenant.client.post("/v1/features", json={"key": "sso"}) for _ in range(6)]
    statuses = sorted(r.status_code for r in await asyncio.gather(*posts))
    assert statuses == [201] + [409] * 5
