"""Seats: activate, heartbeat and release items against soft and hard limits, leases, races."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from allotment.api.app import create_app
from allotment.db import Database
from allotment.entitlements import seats as service
from allotment.errors import Conflict
from allotment.types import utcnow
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe


async def _seats_customer(c, included, soft=None, hard=None, ttl=None):  # type: ignore[no-untyped-def]
    await feature(c, "seats")
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": included, "soft_limit": soft,
                            "hard_limit": hard, "lease_ttl_seconds": ttl}])
    await customer(c, "acme")
    await subscribe(c, "acme", "team")


async def _post(c, action, item, status=200, **extra):  # type: ignore[no-untyped-def]
    resp = await c.post(f"/v1/customers/acme/seats/seats/{action}", json={"item": item, **extra})
    return await ok(resp, status)


async def test_worked_example_100_paid_hard_cap_120(tenant):
    """Seats 1-100 allow, 101-120 allow_overdraft, the 121st is denied and the denial recorded."""
    c = tenant.client
    await _seats_customer(c, 100, None, 120)
    for n in range(1, 101):
        body = await _post(c, "activate", f"user-{n}")
        assert (body["decision"], body["reason"], body["active"]) == ("allow", "within_limit", n)
    for n in range(101, 121):
        body = await _post(c, "activate", f"user-{n}")
        assert (body["decision"], body["reason"], body["active"]) == ("allow_overdraft", "soft_limit", n)
    assert (body["included"], body["soft_limit"], body["hard_limit"]) == (100, 100, 120)
    denied = await _post(c, "activate", "user-121")
    assert (denied["decision"], denied["reason"], denied["active"]) == ("deny", "hard_limit", 120)
    assert denied["item"] == "user-121" and denied["expires_at"] is None
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme", "feature": "seats"}))
    assert [(d["reason"], d["quantity"], d["item"]) for d in denials["items"]] == [("hard_limit", 1, "user-121")]


async def test_reactivating_an_active_item_takes_no_extra_seat(tenant):
    c = tenant.client
    await _seats_customer(c, 1, None, 2)
    assert (await _post(c, "activate", "alice"))["active"] == 1
    again = await _post(c, "activate", "alice")
    assert (again["decision"], again["active"]) == ("allow", 1)
    over = await _post(c, "activate", "bob")
    assert (over["decision"], over["active"]) == ("allow_overdraft", 2)
    assert (await _post(c, "activate", "bob"))["decision"] == "allow_overdraft"
    assert (await _post(c, "activate", "carol"))["decision"] == "deny"


async def test_an_item_renewing_a_paid_seat_is_not_told_it_is_in_overdraft(tenant):
    """Re-activation and heartbeat answer for the item's own seat, as the seat holders list
    flags it: the earliest seats are the paid ones, the last taken the overdraft."""
    c = tenant.client
    await _seats_customer(c, 1, None, 2, ttl=600)
    await _post(c, "activate", "alice")
    await _post(c, "activate", "bob")
    for action in ("activate", "heartbeat"):
        alice, bob = await _post(c, action, "alice"), await _post(c, action, "bob")
        assert (alice["decision"], alice["reason"], alice["active"]) == ("allow", "within_limit", 2)
        assert (bob["decision"], bob["reason"], bob["active"]) == ("allow_overdraft", "soft_limit", 2)
    holders = await ok(await c.get("/v1/customers/acme/seats/seats"))
    assert [(h["item"], h["in_overdraft"]) for h in holders["items"]] == [("alice", False), ("bob", True)]
    await _post(c, "release", "alice")
    assert (await _post(c, "heartbeat", "bob"))["decision"] == "allow"


async def test_release_frees_a_seat_and_double_release_is_409(tenant):
    c = tenant.client
    await _seats_customer(c, 2, None, 2)
    await _post(c, "activate", "alice")
    await _post(c, "activate", "bob")
    assert (await _post(c, "activate", "carol"))["decision"] == "deny"
    released = await _post(c, "release", "alice")
    assert (released["active"], released["item"]) == (1, "alice")
    assert (await _post(c, "activate", "carol"))["active"] == 2
    again = await c.post("/v1/customers/acme/seats/seats/release", json={"item": "alice"})
    assert again.status_code == 409 and "already released" in again.json()["detail"]
    never = await c.post("/v1/customers/acme/seats/seats/release", json={"item": "nobody"})
    assert (never.status_code, never.json()["type"]) == (404, "seat_not_found")
    # A released item may come back, taking a seat again.
    await _post(c, "release", "bob")
    assert (await _post(c, "activate", "alice"))["active"] == 2


async def test_bad_requests(tenant, db):
    c = tenant.client
    await _seats_customer(c, 2, None, 2)
    await feature(c, "api-calls")
    await feature(c, "beta")
    await plan(c, "metered", [metered("api-calls", 10)])
    await customer(c, "other")
    await subscribe(c, "other", "metered")
    resp = await c.post("/v1/customers/other/seats/api-calls/activate", json={"item": "x"})
    assert resp.status_code == 422 and "not seats" in resp.json()["detail"]
    resp = await c.post("/v1/customers/acme/seats/seats/activate", json={"item": ""})
    assert resp.status_code == 422
    resp = await c.post("/v1/customers/acme/seats/seats/activate", json={"item": "x", "lease_ttl_seconds": 0})
    assert resp.status_code == 422
    for action, body in (("activate", {"item": "x", "leaseTtl": 5}), ("release", {"item": "x", "force": True})):
        resp = await c.post(f"/v1/customers/acme/seats/seats/{action}", json=body)
        assert resp.status_code == 422, resp.text
        assert {e["field"] for e in resp.json()["errors"]} & {"leaseTtl", "force"}, resp.json()
    resp = await c.post("/v1/customers/nobody/seats/seats/activate", json={"item": "x"})
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
    body = await ok(await c.post("/v1/customers/acme/seats/beta/activate", json={"item": "x"}))
    assert (body["decision"], body["reason"]) == ("deny", "not_entitled")
    resp = await c.post("/v1/customers/acme/seats/beta/release", json={"item": "x"})
    assert (resp.status_code, resp.json()["type"]) == (404, "entitlement_not_found")
    reader = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    resp = await c.post("/v1/customers/acme/seats/seats/activate", json={"item": "x"}, headers=reader)
    assert resp.status_code == 403
    ingester = {"Authorization": f"Bearer {await tenant.key('ingest', db)}"}
    resp = await c.post("/v1/customers/acme/seats/seats/activate", json={"item": "x"}, headers=ingester)
    assert resp.json()["active"] == 1


async def test_lease_ttl_from_entitlement_or_request(tenant):
    c = tenant.client
    await _seats_customer(c, 5, None, 5, ttl=60)
    body = await _post(c, "activate", "alice")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(seconds=55) < expires - utcnow() <= timedelta(seconds=60)
    body = await _post(c, "heartbeat", "alice", lease_ttl_seconds=3600)
    assert datetime.fromisoformat(body["expires_at"]) - utcnow() > timedelta(seconds=3500)
    never = await c.post("/v1/customers/acme/seats/seats/heartbeat", json={"item": "bob"})
    assert (never.status_code, never.json()["type"]) == (404, "seat_not_found")


async def _service(db: Database, tenant_id: str, action: str, item: str, at: datetime, **kw: Any) -> Any:
    async with db.transaction() as session:
        return await getattr(service, action)(session, tenant_id, "acme", "seats", item, at=at, **kw)


async def test_an_expired_lease_frees_its_seat(tenant, db):
    await _seats_customer(tenant.client, 1, None, 2, ttl=60)
    t0 = utcnow() + timedelta(seconds=1)
    assert (await _service(db, tenant.id, "activate", "alice", t0)).active == 1
    assert (await _service(db, tenant.id, "activate", "bob", t0)).active == 2
    denied = await _service(db, tenant.id, "activate", "carol", t0 + timedelta(seconds=59))
    assert (denied.decision.decision, denied.active) == ("deny", 2)
    # At expiry both leases end (released_at = expires_at) and their seats are given back.
    later = t0 + timedelta(seconds=60)
    carol = await _service(db, tenant.id, "activate", "carol", later)
    assert (carol.decision.decision, carol.active) == ("allow", 1)
    with pytest.raises(Conflict, match="expired"):
        await _service(db, tenant.id, "heartbeat", "alice", later)
    with pytest.raises(Conflict, match="expired"):
        await _service(db, tenant.id, "release", "bob", later)
    # An expired item activates again as a new seat.
    assert (await _service(db, tenant.id, "activate", "alice", later)).active == 2


async def test_heartbeat_keeps_a_lease_alive_past_its_original_expiry(tenant, db):
    await _seats_customer(tenant.client, 1, None, 1, ttl=60)
    t0 = utcnow() + timedelta(seconds=1)
    first = await _service(db, tenant.id, "activate", "alice", t0)
    assert first.expires_at == t0 + timedelta(seconds=60)
    beat = await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(seconds=50))
    assert beat.expires_at == t0 + timedelta(seconds=110)
    past = t0 + timedelta(seconds=100)  # after the first expiry, before the extended one
    denied = await _service(db, tenant.id, "activate", "bob", past)
    assert (denied.decision.decision, denied.active) == ("deny", 1)
    again = await _service(db, tenant.id, "activate", "alice", past)
    assert (again.decision.decision, again.active) == ("allow", 1)
    released = await _service(db, tenant.id, "release", "alice", past)
    assert released.active == 0


async def test_a_heartbeat_renews_a_lease_by_the_ttl_it_was_taken_with(tenant, db):
    """A client that asked for a 30 s lease and then crashed frees its seat, heartbeat or not."""
    await _seats_customer(tenant.client, 1, None, 1)  # the plan sets no lease length
    t0 = utcnow() + timedelta(seconds=1)
    first = await _service(db, tenant.id, "activate", "alice", t0, lease_ttl_seconds=30)
    assert first.expires_at == t0 + timedelta(seconds=30)
    beat = await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(seconds=20))
    assert beat.expires_at == t0 + timedelta(seconds=50)
    longer = await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(seconds=40), lease_ttl_seconds=60)
    assert longer.expires_at == t0 + timedelta(seconds=100)
    again = await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(seconds=90))
    assert again.expires_at == t0 + timedelta(seconds=150)  # the length last asked for
    after = await _service(db, tenant.id, "activate", "bob", t0 + timedelta(seconds=150))
    assert (after.decision.decision, after.active) == ("allow", 1)


async def test_a_lease_taken_without_expiry_keeps_none_on_heartbeat(tenant, db):
    await _seats_customer(tenant.client, 1, None, 1)
    t0 = utcnow() + timedelta(seconds=1)
    assert (await _service(db, tenant.id, "activate", "alice", t0)).expires_at is None
    assert (await _service(db, tenant.id, "heartbeat", "alice", t0 + timedelta(days=9))).expires_at is None


async def _race(clients: list[httpx.AsyncClient], n: int) -> list[dict[str, Any]]:
    responses = await asyncio.gather(*(
        clients[i % len(clients)].post("/v1/customers/acme/seats/seats/activate", json={"item": f"item-{i}"})
        for i in range(n)
    ))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


async def test_concurrent_activations_never_pass_the_hard_limit(tenant):
    """40 concurrent activations of distinct items against a hard limit of 10: exactly 10 seats."""
    await _seats_customer(tenant.client, 5, None, 10)
    answers = await _race([tenant.client], 40)
    assert sum(a["decision"] != "deny" for a in answers) == 10
    assert sorted(a["active"] for a in answers if a["decision"] != "deny") == list(range(1, 11))
    body = await _post(tenant.client, "activate", "late")
    assert (body["decision"], body["active"]) == ("deny", 10)


async def test_concurrent_activations_on_separate_engines_never_pass_the_hard_limit(tenant, settings):
    """The same race through four database engines, plus re-activations of the same items."""
    await _seats_customer(tenant.client, 5, None, 10)
    databases = [Database(settings) for _ in range(4)]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, db=d)),
                          base_url="http://allotment.test", headers={"Authorization": f"Bearer {tenant.admin}"})
        for d in databases
    ]
    try:
        answers = await _race(clients, 40)
        winners = [a["item"] for a in answers if a["decision"] != "deny"]
        # Every winner re-activating concurrently, twice, takes no seat.
        again = await asyncio.gather(*(
            clients[i % 4].post("/v1/customers/acme/seats/seats/activate", json={"item": item})
            for i, item in enumerate(winners * 2)
        ))
    finally:
        for client, database in zip(clients, databases, strict=True):
            await client.aclose()
            await database.dispose()
    assert len(winners) == 10
    assert all(r.status_code == 200 and r.json()["active"] == 10 and r.json()["decision"] != "deny" for r in again)
    denials = await ok(await tenant.client.get("/v1/denials", params={"customer": "acme"}))
    assert len(denials["items"]) == 30
    assert (await _post(tenant.client, "release", winners[0]))["active"] == 9


async def test_entitlement_state_shows_live_seats_and_overdraft(tenant):
    """The customer's entitlement view counts active seats and flags overdraft past the paid ones."""
    c = tenant.client
    await _seats_customer(c, 2, None, 3)
    for item in ("alice", "bob", "carol"):
        await _post(c, "activate", item)
    state = await ok(await c.get("/v1/customers/acme/entitlements/seats"))
    assert (state["usage"], state["in_overdraft"], state["has_access"]) == (3, True, False)
    await _post(c, "release", "carol")
    state = await ok(await c.get("/v1/customers/acme/entitlements/seats"))
    assert (state["usage"], state["in_overdraft"], state["has_access"]) == (2, False, True)


async def test_active_seats_survive_a_plan_change(tenant):
    """Items holding seats keep them when the customer moves to a plan with more seats."""
    c = tenant.client
    await _seats_customer(c, 2, None, 3)
    for item in ("alice", "bob", "carol"):
        await _post(c, "activate", item)
    assert (await _post(c, "activate", "dave"))["decision"] == "deny"
    await plan(c, "business", [{"feature": "seats", "kind": "seats", "included": 4, "hard_limit": 4}])
    subs = await ok(await c.get("/v1/subscriptions", params={"customer": "acme"}))
    await ok(await c.post(f"/v1/subscriptions/{subs['items'][0]['id']}/change-plan", json={"plan": "business"}))
    state = await ok(await c.get("/v1/customers/acme/entitlements/seats"))
    assert (state["usage"], state["included"]) == (3, 4)
    assert (await _post(c, "activate", "alice"))["active"] == 3  # still holds its seat
    assert (await _post(c, "activate", "dave"))["active"] == 4
    assert (await _post(c, "activate", "erin"))["decision"] == "deny"
    assert (await _post(c, "release", "bob"))["active"] == 3


async def test_a_retried_activation_with_its_key_gets_the_first_answer(tenant):
    c = tenant.client
    await _seats_customer(c, 5)
    headers = {"Idempotency-Key": "act-1"}
    url = "/v1/customers/acme/seats/seats/activate"
    first = await c.post(url, json={"item": "alice"}, headers=headers)
    again = await c.post(url, json={"item": "alice"}, headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers


@pytest.mark.parametrize("action", ["activate", "heartbeat", "release"])
async def test_a_seat_key_reused_for_another_item_is_409_and_leaves_that_item_alone(tenant, action):
    c = tenant.client
    await _seats_customer(c, 5)
    await _post(c, "activate", "alice")
    await _post(c, "activate", "bob")
    headers = {"Idempotency-Key": "seat-1"}
    url = f"/v1/customers/acme/seats/seats/{action}"
    await ok(await c.post(url, json={"item": "alice"}, headers=headers))
    other = await c.post(url, json={"item": "bob"}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await _post(c, "heartbeat", "bob"))["item"] == "bob"  # bob's seat is untouched


async def test_a_seat_key_reused_on_another_action_is_409(tenant):
    """The same key and body sent to heartbeat after activate is another request, not a replay."""
    c = tenant.client
    await _seats_customer(c, 5)
    headers = {"Idempotency-Key": "seat-1"}
    await ok(await c.post("/v1/customers/acme/seats/seats/activate", json={"item": "alice"}, headers=headers))
    other = await c.post("/v1/customers/acme/seats/seats/release", json={"item": "alice"}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await _post(c, "heartbeat", "alice"))["active"] == 1
