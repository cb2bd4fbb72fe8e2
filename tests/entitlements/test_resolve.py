"""Resolving a check's names: one statement, the same row the ORM loads, the same errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from allotment.entitlements import resolve
from allotment.entitlements.check import live_entitlement
from allotment.errors import NotFound
from allotment.types import utcnow
from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe

FEATURES = ("api-calls", "sso", "limits", "seats", "beta")


async def _setup(c):  # type: ignore[no-untyped-def]
    for key in FEATURES:
        await feature(c, key)
    await plan(c, "starter", [
        metered("api-calls", 10, 12, 15) | {"usage_period": "WEEK", "overage_at_reset": "carry"},
        boolean("sso"),
        {"feature": "limits", "kind": "static", "config": {"rpm": 60, "regions": ["eu", "us"]}},
        {"feature": "seats", "kind": "seats", "included": 3, "soft_limit": 4, "hard_limit": 5,
         "lease_ttl_seconds": 300},
    ])
    acme = await customer(c, "acme")
    await subscribe(c, "acme", "starter", time_zone="Asia/Kathmandu")
    await ok(await c.put("/v1/customers/acme/entitlements/api-calls/override", json={"included": "10.5"}))
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "beta", "kind": "boolean"}), 201)
    return acme


def _values(row):  # type: ignore[no-untyped-def]
    columns = row.__table__.columns
    return {c.name: (getattr(row, c.name), type(getattr(row, c.name))) for c in columns}


@pytest.mark.parametrize("outside", [True, False], ids=["outside", "in-session"])
async def test_resolved_row_equals_the_row_the_orm_loads_for_every_kind(tenant, db, outside):
    """Times, decimals, JSON and booleans come back exactly as the ORM gives them, on both ways."""
    acme = await _setup(tenant.client)
    at = utcnow()
    for key in FEATURES:
        resolve._remembered.clear()
        async with db.transaction(readonly=True) as session:
            if outside:
                found = await resolve.target_outside(db, tenant.id, "acme", key, at)
            else:
                found = await resolve.target(session, tenant.id, "acme", key, at)
            feature_id = found.feature_id
            loaded = await live_entitlement(session, tenant.id, acme["id"], feature_id, at)
        assert found.customer_id == acme["id"]
        assert loaded is not None and found.row is not None
        assert _values(found.row) == _values(loaded), key


async def test_a_pair_resolves_to_the_row_in_force_at_the_time_asked(tenant, db):
    """The row ended by an override answers for times before the override, the new one after."""
    acme = await _setup(tenant.client)
    resolve._remembered.clear()
    now = utcnow()
    current = await resolve.target_outside(db, tenant.id, acme["id"], "api-calls", now)
    assert current.row is not None and current.row.included == 10.5 and current.row.active_to is None
    before = await resolve.target_outside(db, tenant.id, "acme", "api-calls", current.row.active_from
                                          - timedelta(microseconds=1))
    assert before.row is not None and before.row.included == 10 and before.row.active_to == current.row.active_from


async def test_unknown_names_raise_not_found_naming_them(tenant, db):
    """An unknown customer is named first; a known customer with an unknown feature names it."""
    await _setup(tenant.client)
    for customer_key, feature_key, missing in (("nobody", "sso", "customer"), ("nobody", "nothing", "customer"),
                                               ("acme", "nothing", "feature")):
        with pytest.raises(NotFound) as raised:
            await resolve.target_outside(db, tenant.id, customer_key, feature_key, utcnow())
        assert (raised.value.kind, raised.value.key) == (missing, customer_key if missing == "customer" else feature_key)


async def test_a_feature_without_entitlement_resolves_to_no_row_and_is_not_remembered(tenant, db):
    acme = await _setup(tenant.client)
    unlisted = await feature(tenant.client, "unlisted")
    found = await resolve.target_outside(db, tenant.id, "acme", "unlisted", utcnow())
    assert (found.customer_id, found.feature_id, found.row) == (acme["id"], unlisted["id"], None)
    assert resolve.remembered(tenant.id, "acme", "unlisted") is None


async def test_other_tenants_names_do_not_resolve(tenant, other_tenant, db):
    await _setup(tenant.client)
    await feature(other_tenant.client, "sso")
    with pytest.raises(NotFound) as raised:
        await resolve.target_outside(db, other_tenant.id, "acme", "sso", utcnow())
    assert (raised.value.kind, raised.value.key) == ("customer", "acme")
