"""The outbox: `emit` writes once per dedupe key, inside the caller's transaction."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from allotment.notifications import service
from allotment.types import utcnow
from tests.notifications.conftest import customer_id, emit, ok


async def test_emit_stores_one_notification_per_dedupe_key(db, tenant):
    """The second emit of the same occurrence is refused by the database and reported."""
    at = utcnow()
    assert await emit(db, tenant, "threshold:ent_1:2026-11:80", at=at) is True
    assert await emit(db, tenant, "threshold:ent_1:2026-11:80", at=at + timedelta(seconds=1)) is False
    assert await emit(db, tenant, "threshold:ent_1:2026-12:80", at=at) is True
    items = (await ok(await tenant.client.get("/v1/notifications")))["items"]
    assert [n["payload"]["key"] for n in items] == ["threshold:ent_1:2026-12:80", "threshold:ent_1:2026-11:80"]


async def test_dedupe_keys_are_per_tenant(db, tenant, other_tenant):
    assert await emit(db, tenant, "same-key", at=utcnow())
    assert await emit(db, other_tenant, "same-key", at=utcnow())


async def test_emit_rolls_back_with_its_transaction(db, tenant):
    """Nothing is sent for a change that did not commit."""
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await service.emit(session, tenant.id, type="entitlement.usage_denied", dedupe_key="k",
                               customer_id=None, payload={}, at=utcnow())
            raise RuntimeError("the usage that caused it failed")
    assert (await ok(await tenant.client.get("/v1/notifications")))["items"] == []
    assert await emit(db, tenant, "k", at=utcnow())  # the key was never taken


async def test_emit_refuses_a_type_outside_the_catalogue(db, tenant):
    async with db.transaction() as session:
        with pytest.raises(ValueError, match="unknown notification type"):
            await service.emit(session, tenant.id, type="entitlement.exploded", dedupe_key="k",
                               customer_id=None, payload={}, at=utcnow())


async def test_payload_keeps_quantities_as_numbers_and_times_in_utc(db, tenant):
    cid = await customer_id(tenant, "acme")
    at = utcnow()
    await emit(db, tenant, "k", at=at, customer=cid, type="entitlement.overdraft_started",
               usage=Decimal("100.000000"), rate=Decimal("0.5"), period_end=at)
    item = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    assert item["type"] == "entitlement.overdraft_started" and item["customer_id"] == cid
    assert item["payload"]["usage"] == 100 and item["payload"]["rate"] == 0.5
    assert item["payload"]["period_end"].endswith("Z") and item["id"].startswith("ntf_")


async def test_notifications_filter_by_type_and_customer(db, tenant):
    acme, globex = await customer_id(tenant, "acme"), await customer_id(tenant, "globex")
    at = utcnow()
    await emit(db, tenant, "a1", at=at, customer=acme)
    await emit(db, tenant, "a2", at=at, customer=acme, type="entitlement.usage_denied")
    await emit(db, tenant, "g1", at=at, customer=globex)
    by_customer = (await ok(await tenant.client.get("/v1/notifications", params={"customer": "acme"})))["items"]
    assert [n["payload"]["key"] for n in by_customer] == ["a2", "a1"]
    denied = (await ok(await tenant.client.get(
        "/v1/notifications", params={"type": "entitlement.usage_denied"})))["items"]
    assert [n["payload"]["key"] for n in denied] == ["a2"]
    page = await ok(await tenant.client.get("/v1/notifications", params={"limit": 2}))
    rest = await ok(await tenant.client.get("/v1/notifications", params={"cursor": page["next_cursor"]}))
    assert [n["payload"]["key"] for n in page["items"] + rest["items"]] == ["g1", "a2", "a1"]


async def test_other_tenant_cannot_see_or_replay_notifications(db, tenant, other_tenant):
    await emit(db, tenant, "mine", at=utcnow())
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    b = other_tenant.client
    assert (await ok(await b.get("/v1/notifications")))["items"] == []
    assert (await b.get(f"/v1/notifications/{notification['id']}")).status_code == 404
    assert (await b.post(f"/v1/notifications/{notification['id']}/replay")).status_code == 404


async def test_unknown_customer_filter_is_a_404(tenant):
    resp = await tenant.client.get("/v1/notifications", params={"customer": "nobody"})
    assert resp.status_code == 404 and resp.json()["type"] == "customer_not_found"
