"""Who holds the seats now: `GET /v1/customers/{key}/seats/{feature}` lists the live leases."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import pytest

from allotment.db import Database
from allotment.entitlements import seats as service
from allotment.types import utcnow
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe

URL = "/v1/customers/acme/seats/seats"


async def _seats_customer(c: Any, included: int, soft: int | None = None, hard: int | None = None,
                          ttl: int | None = None) -> None:
    await feature(c, "seats")
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": included, "soft_limit": soft,
                            "hard_limit": hard, "lease_ttl_seconds": ttl}])
    await customer(c, "acme")
    await subscribe(c, "acme", "team")


async def _activate(c: Any, *items: str) -> None:
    for item in items:
        await ok(await c.post(f"{URL}/activate", json={"item": item}))


async def _holders(c: Any, **params: Any) -> list[str]:
    return [h["item"] for h in (await ok(await c.get(URL, params=params)))["items"]]


async def _service(db: Database, tenant_id: str, action: str, item: str, at: datetime, **kw: Any) -> Any:
    async with db.transaction() as session:
        return await getattr(service, action)(session, tenant_id, "acme", "seats", item, at=at, **kw)


async def _listed(db: Database, tenant_id: str, at: datetime) -> list[service.SeatHolder]:
    async with db.transaction(readonly=True) as session:
        return await service.holders(session, tenant_id, "acme", "seats", at=at, limit=50)


async def test_the_list_names_each_item_holding_a_seat_earliest_first(tenant):
    """After three activations the list holds the three items, oldest seat first, with when each took it."""
    c = tenant.client
    await _seats_customer(c, 5, None, 5)
    before = utcnow()
    await _activate(c, "alice", "bob", "carol")
    body = await ok(await c.get(URL))
    assert body["next_cursor"] is None
    assert [h["item"] for h in body["items"]] == ["alice", "bob", "carol"]
    first = body["items"][0]
    assert set(first) == {"item", "activated_at", "expires_at", "lease_ttl_seconds", "in_overdraft"}
    assert (first["expires_at"], first["lease_ttl_seconds"], first["in_overdraft"]) == (None, None, False)
    assert before <= datetime.fromisoformat(first["activated_at"]) <= utcnow()


async def test_a_customer_without_seats_taken_has_an_empty_list(tenant):
    """No activation yet: no items, no cursor."""
    await _seats_customer(tenant.client, 5)
    assert await ok(await tenant.client.get(URL)) == {"items": [], "next_cursor": None}


async def test_the_seats_taken_past_the_soft_limit_are_flagged_in_overdraft(tenant):
    """2 paid, cap 4: the 3rd and 4th seats taken are the overdraft, as many as the state's overage."""
    c = tenant.client
    await _seats_customer(c, 2, None, 4)
    await _activate(c, "u1", "u2", "u3", "u4")
    body = await ok(await c.get(URL))
    assert [(h["item"], h["in_overdraft"]) for h in body["items"]] == [
        ("u1", False), ("u2", False), ("u3", True), ("u4", True)]
    state = await ok(await c.get("/v1/customers/acme/entitlements/seats"))
    assert state["overage"] == sum(h["in_overdraft"] for h in body["items"]) == 2


async def test_a_release_below_the_soft_limit_moves_the_overdraft_line(tenant):
    """When a paid seat is freed, the earliest overdraft holder is within the paid seats again."""
    c = tenant.client
    await _seats_customer(c, 2, None, 4)
    await _activate(c, "u1", "u2", "u3", "u4")
    await ok(await c.post(f"{URL}/release", json={"item": "u1"}))
    body = await ok(await c.get(URL))
    assert [(h["item"], h["in_overdraft"]) for h in body["items"]] == [("u2", False), ("u3", False), ("u4", True)]


async def test_a_soft_limit_above_the_included_seats_draws_the_overdraft_line(tenant):
    """Included 1, soft 2: only seats past the soft limit are overdraft, as activate judged them."""
    c = tenant.client
    await _seats_customer(c, 1, 2, 3)
    await _activate(c, "u1", "u2", "u3")
    assert [h["in_overdraft"] for h in (await ok(await c.get(URL)))["items"]] == [False, False, True]


async def test_pay_as_you_go_seats_are_never_in_overdraft(tenant):
    """Nothing included and no limit: no seat is above what was promised."""
    c = tenant.client
    await _seats_customer(c, 0)
    await _activate(c, "u1", "u2")
    assert [h["in_overdraft"] for h in (await ok(await c.get(URL)))["items"]] == [False, False]


async def test_a_released_item_is_not_listed(tenant):
    """Release frees the seat and drops the item from the list; activating again lists it last."""
    c = tenant.client
    await _seats_customer(c, 5)
    await _activate(c, "alice", "bob")
    await ok(await c.post(f"{URL}/release", json={"item": "alice"}))
    assert await _holders(c) == ["bob"]
    await _activate(c, "alice")
    assert await _holders(c) == ["bob", "alice"]


async def test_a_lease_that_expired_drops_its_item_without_any_seat_operation(tenant, db):
    """At its expiry a lease holds no seat: the list leaves it out though nothing swept it yet."""
    await _seats_customer(tenant.client, 5, None, 5, ttl=60)
    t0 = utcnow() + timedelta(seconds=1)
    await _service(db, tenant.id, "activate", "alice", t0)
    await _service(db, tenant.id, "activate", "bob", t0 + timedelta(seconds=30))
    before = await _listed(db, tenant.id, t0 + timedelta(seconds=59))
    assert [(h.item, h.activated_at, h.expires_at, h.lease_ttl_seconds) for h in before] == [
        ("alice", t0, t0 + timedelta(seconds=60), 60),
        ("bob", t0 + timedelta(seconds=30), t0 + timedelta(seconds=90), 60)]
    assert [h.item for h in await _listed(db, tenant.id, t0 + timedelta(seconds=60))] == ["bob"]
    assert await _listed(db, tenant.id, t0 + timedelta(seconds=90)) == []


async def test_a_heartbeat_keeps_the_item_listed_with_its_new_expiry(tenant, db):
    """A renewed lease stays past its first expiry and shows the renewed one."""
    await _seats_customer(tenant.client, 5, None, 5, ttl=60)
    t0 = utcnow() + timedelta(seconds=1)
    await _service(db, tenant.id, "activate", "alice", t0)
    await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(seconds=50))
    [alice] = await _listed(db, tenant.id, t0 + timedelta(seconds=100))
    assert (alice.item, alice.activated_at, alice.expires_at) == ("alice", t0, t0 + timedelta(seconds=110))


async def test_the_list_over_http_shows_each_lease_expiry(tenant):
    """A leased seat answers its expiry and the lease length that renews it."""
    c = tenant.client
    await _seats_customer(c, 5, None, 5, ttl=600)
    taken = await ok(await c.post(f"{URL}/activate", json={"item": "alice", "lease_ttl_seconds": 120}))
    [alice] = (await ok(await c.get(URL)))["items"]
    assert (alice["expires_at"], alice["lease_ttl_seconds"]) == (taken["expires_at"], 120)


async def test_a_cursor_walks_the_holders_page_by_page(tenant):
    """Pages of two cover every holder once, in order, and the overdraft flag counts across pages."""
    c = tenant.client
    await _seats_customer(c, 3, None, 5)
    await _activate(c, "u1", "u2", "u3", "u4", "u5")
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = await ok(await c.get(URL, params=params))
        seen += [(h["item"], h["in_overdraft"]) for h in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [("u1", False), ("u2", False), ("u3", False), ("u4", True), ("u5", True)]
    assert pages == 3


async def test_a_limit_out_of_range_is_422_and_the_default_page_is_50(tenant):
    """limit 0 and 1001 are refused naming limit; without one, 50 holders come back and a cursor."""
    c = tenant.client
    await _seats_customer(c, 60)
    for bad in (0, 1001):
        resp = await c.get(URL, params={"limit": bad})
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "limit", resp.text
    await _activate(c, *(f"user-{n:02}" for n in range(51)))
    body = await ok(await c.get(URL))
    assert len(body["items"]) == 50 and body["next_cursor"]
    assert await _holders(c, cursor=body["next_cursor"]) == ["user-50"]


async def test_a_garbled_cursor_is_a_400_naming_cursor(tenant):
    """A cursor this list did not hand out never silently restarts the list."""
    c = tenant.client
    await _seats_customer(c, 5)
    own = "/v1/customers/{customer_key}/seats/{feature_key}?after="
    garbled = [base64.urlsafe_b64encode(f"{own}{p}".encode()).decode() for p in ("xyz", "x y", "-1 u1", "9" * 30 + " u1")]
    for cursor in ("%%%", *garbled):
        resp = await c.get(URL, params={"cursor": cursor})
        assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "cursor", resp.text


async def test_holders_keep_their_seats_in_the_list_across_a_plan_change(tenant):
    """Right after a plan change, before any seat operation, the items are still listed."""
    c = tenant.client
    await _seats_customer(c, 2, None, 3)
    await _activate(c, "alice", "bob", "carol")
    await plan(c, "business", [{"feature": "seats", "kind": "seats", "included": 4, "hard_limit": 4}])
    subs = await ok(await c.get("/v1/subscriptions", params={"customer": "acme"}))
    await ok(await c.post(f"/v1/subscriptions/{subs['items'][0]['id']}/change-plan", json={"plan": "business"}))
    body = await ok(await c.get(URL))
    assert [(h["item"], h["in_overdraft"]) for h in body["items"]] == [
        ("alice", False), ("bob", False), ("carol", False)]


@pytest.mark.parametrize("scope", ["read", "ingest", "admin"])
async def test_any_key_of_the_tenant_may_list_the_holders(tenant, db, scope):
    """Dashboards (read), the vendor's backend (ingest) and operators (admin) may all see them."""
    c = tenant.client
    await _seats_customer(c, 5)
    await _activate(c, "alice")
    headers = {"Authorization": f"Bearer {await tenant.key(scope, db)}"}
    assert [h["item"] for h in (await ok(await c.get(URL, headers=headers)))["items"]] == ["alice"]


async def test_without_a_key_the_list_is_401(tenant, anon):
    """Nobody anonymous learns who holds a customer's seats."""
    await _seats_customer(tenant.client, 5)
    assert (await anon.get(URL)).status_code == 401


async def test_another_tenants_key_gets_404_for_the_customer(tenant, other_tenant):
    """A tenant cannot see whether another tenant's customer exists, let alone its seat holders."""
    await _seats_customer(tenant.client, 5)
    await _activate(tenant.client, "alice")
    resp = await other_tenant.client.get(URL)
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
    await _seats_customer(other_tenant.client, 5)  # the same keys in the other tenant: its own, empty list
    assert await _holders(other_tenant.client) == []


async def test_an_unknown_customer_or_feature_is_a_404_naming_it(tenant):
    """As the seat actions answer: customer_not_found, feature_not_found, each naming the key."""
    c = tenant.client
    await _seats_customer(c, 5)
    resp = await c.get("/v1/customers/nobody/seats/seats")
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found") and "nobody" in resp.json()["detail"]
    resp = await c.get("/v1/customers/acme/seats/nothing")
    assert (resp.status_code, resp.json()["type"]) == (404, "feature_not_found") and "nothing" in resp.json()["detail"]


async def test_a_feature_the_customer_is_not_entitled_to_is_a_404(tenant):
    """A feature the customer holds no entitlement to has no seats: entitlement_not_found, as release."""
    c = tenant.client
    await _seats_customer(c, 5)
    await feature(c, "beta")
    resp = await c.get("/v1/customers/acme/seats/beta")
    assert (resp.status_code, resp.json()["type"]) == (404, "entitlement_not_found")


async def test_a_feature_that_is_not_seats_is_the_422_activate_answers(tenant):
    """A metered entitlement has no seat holders: the same 422 naming `feature` as an activation."""
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "metered", [metered("api-calls", 10)])
    await customer(c, "acme")
    await subscribe(c, "acme", "metered")
    listed = await c.get("/v1/customers/acme/seats/api-calls")
    activated = await c.post("/v1/customers/acme/seats/api-calls/activate", json={"item": "x"})
    assert listed.status_code == activated.status_code == 422
    assert listed.json()["type"] == activated.json()["type"]
    assert listed.json()["errors"] == activated.json()["errors"]
