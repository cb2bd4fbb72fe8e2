"""A feature's usage is counted from what its meter adds up: only SUM and COUNT meters can
measure one (a MAX, LATEST or UNIQUE_COUNT is no running total, and would never move a limit)."""

from __future__ import annotations

import pytest

from tests.entitlements.catalogue import ok


async def _meter(c, key, aggregation):  # type: ignore[no-untyped-def]
    body = {"key": key, "event_type": key, "aggregation": aggregation}
    if aggregation != "COUNT":
        body["value_property"] = "$.value"
    await ok(await c.post("/v1/meters", json=body), 201)


@pytest.mark.parametrize("aggregation", ["UNIQUE_COUNT", "MAX", "LATEST", "AVG", "MIN"])
async def test_a_feature_on_a_meter_that_is_no_running_total_is_422_naming_meter(tenant, aggregation):
    """Linking a feature to a UNIQUE_COUNT (or MAX, LATEST...) meter is refused, naming `meter`."""
    await _meter(tenant.client, "active-users", aggregation)
    resp = await tenant.client.post("/v1/features", json={"key": "users", "meter": "active-users"})
    assert resp.status_code == 422, resp.text
    error = resp.json()["errors"][0]
    assert error["field"] == "meter" and aggregation in error["message"]


async def test_a_feature_moved_onto_a_latest_meter_is_422(tenant):
    """PATCH cannot move a feature onto a meter whose values do not add up either."""
    c = tenant.client
    await _meter(c, "calls", "COUNT")
    await _meter(c, "storage", "LATEST")
    await ok(await c.post("/v1/features", json={"key": "api", "meter": "calls"}), 201)
    resp = await c.patch("/v1/features/api", json={"meter": "storage"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "meter"


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT"])
async def test_features_on_sum_and_count_meters_are_made_and_count_events(tenant, aggregation):
    """SUM and COUNT meters measure features, and their events move the customer's usage."""
    c = tenant.client
    await _meter(c, "calls", aggregation)
    await ok(await c.post("/v1/features", json={"key": "api", "meter": "calls"}), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["k1"]}), 201)
    body = {"feature": "api", "kind": "metered", "included": 100}
    await ok(await c.post("/v1/customers/acme/entitlements", json=body), 201)
    event = {"specversion": "1.0", "id": "e1", "source": "gw", "type": "calls", "subject": "k1", "data": {"value": 4}}
    await ok(await c.post("/v1/events", json=event))
    answer = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "api"}))
    assert answer["usage"] == (4 if aggregation == "SUM" else 1)
