"""`GET /v1/denials` takes a time range as the meter queries take one: `from` before `to`."""

from __future__ import annotations

from tests.entitlements.catalogue import customer, feature, ok


async def _refused_twice(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await customer(c, "acme")
    await ok(await c.post("/v1/customers/acme/entitlements",
                          json={"feature": "api-calls", "kind": "metered", "included": 1, "hard_limit": 1}), 201)
    for _ in range(2):
        answer = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 2}))
        assert answer["decision"] == "deny"


async def test_a_range_that_ends_before_it_starts_is_422_naming_from(tenant):
    """from after to is a mistake to point out, not an empty page."""
    await _refused_twice(tenant.client)
    resp = await tenant.client.get("/v1/denials", params={"from": "2027-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "from"


async def test_an_empty_range_is_422_too(tenant):
    """from equal to to holds no instant: [from, to) is empty."""
    resp = await tenant.client.get("/v1/denials", params={"from": "2026-06-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"})
    assert resp.status_code == 422, resp.text


async def test_a_range_around_the_denials_lists_them(tenant):
    """A sound range still lists what was refused within it."""
    await _refused_twice(tenant.client)
    page = await ok(await tenant.client.get("/v1/denials", params={"from": "2026-01-01T00:00:00Z",
                                                                    "to": "2099-01-01T00:00:00Z"}))
    assert [d["reason"] for d in page["items"]] == ["hard_limit", "hard_limit"]
