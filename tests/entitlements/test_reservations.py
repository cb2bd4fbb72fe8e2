"""Reservations: hold, commit, release and expiry of units on metered entitlements, and races."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import update

from allotment.api.app import create_app
from allotment.db import Database
from allotment.entitlements import check as checks
from allotment.entitlements import reservations as service
from allotment.entitlements import state
from allotment.entitlements.models import Reservation
from allotment.errors import Conflict
from allotment.types import utcnow
from tests.conftest import _admin_dsn
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.entitlements.locks import until, waiting


async def _prepaid(c, hard=100):  # type: ignore[no-untyped-def]
    """A driver with 100 kWh of prepaid credit: included 100, hard limit 100."""
    await feature(c, "kwh")
    await plan(c, "prepaid", [metered("kwh", 100, None, hard)])
    await customer(c, "driver")
    await subscribe(c, "driver", "prepaid")


async def _reserve(c, quantity, status=201, ttl=600, **extra):  # type: ignore[no-untyped-def]
    body = {"customer": "driver", "feature": "kwh", "quantity": quantity, "ttl_seconds": ttl, **extra}
    return await ok(await c.post("/v1/reservations", json=body), status)


async def _check(c, quantity=1):  # type: ignore[no-untyped-def]
    return await ok(await c.post("/v1/check", json={"customer": "driver", "feature": "kwh", "quantity": quantity}))


async def test_ev_charging_session(tenant):
    """Reserve 30 kWh at the plug, commit the 22.4 kWh actually charged; the rest goes back."""
    c = tenant.client
    await _prepaid(c)
    held = await _reserve(c, 30)
    assert (held["decision"], held["reason"], held["reserved"], held["balance"]) == ("allow", "within_limit", 30, 70)
    res = held["reservation"]
    assert (res["status"], res["quantity"], res["id"][:4]) == ("open", 30, "res_")
    assert (res["customer"], res["feature"], res["customer_id"][:4]) == ("driver", "kwh", "cus_")
    # Every other check counts the hold: 70 kWh are available, not 71.
    seen = await _check(c, 70)
    assert (seen["decision"], seen["balance"], seen["usage"]) == ("allow", 70, 0)
    assert (await _check(c, 71))["decision"] == "deny"
    settled = await ok(await c.post(f"/v1/reservations/{res['id']}/commit", json={"quantity": 22.4}))
    assert (settled["usage"], settled["reserved"], settled["balance"], settled["hard_limit"]) == (22.4, 0, 77.6, 100)
    assert (settled["reservation"]["status"], settled["reservation"]["committed_quantity"]) == ("committed", 22.4)
    after = await _check(c)
    assert (after["usage"], after["balance"]) == (22.4, 77.6)
    read = await ok(await c.get(f"/v1/reservations/{res['id']}"))
    assert (read["status"], read["customer"], read["feature"]) == ("committed", "driver", "kwh")
    assert (settled["reservation"]["customer"], settled["reservation"]["feature"]) == ("driver", "kwh")
    # A session asking for more than the balance is refused at the plug, and the refusal recorded.
    refused = await _reserve(c, 78, status=200)
    assert (refused["decision"], refused["reason"], refused["reservation"]) == ("deny", "hard_limit", None)
    denials = await ok(await c.get("/v1/denials", params={"customer": "driver", "feature": "kwh"}))
    assert [(d["reason"], d["quantity"]) for d in denials["items"]] == [("hard_limit", 71), ("hard_limit", 78)]
    assert (await _reserve(c, 77.6))["reserved"] == 77.6


async def test_an_open_hold_keeps_counting_and_commits_on_the_values_after_a_plan_change_or_override(tenant):
    """The charger holds 30 kWh; the driver's plan changes, then an override raises the cap:
    the hold still counts against the values in force, and the 22.4 kWh land on them."""
    c = tenant.client
    await _prepaid(c)
    await plan(c, "plus", [metered("kwh", 200, None, 200)])
    sub = (await ok(await c.get("/v1/subscriptions", params={"customer": "driver"})))["items"][0]
    held = (await _reserve(c, 30))["reservation"]["id"]
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "plus"}))
    seen = await _check(c)
    assert (seen["usage"], seen["hard_limit"], seen["balance"]) == (0, 200, 170)
    assert (await _check(c, 171))["decision"] == "deny"
    await ok(await c.put("/v1/customers/driver/entitlements/kwh/override", json={"hard_limit": 250}))
    assert (await _check(c))["balance"] == 170
    settled = await ok(await c.post(f"/v1/reservations/{held}/commit", json={"quantity": 22.4}))
    assert (settled["usage"], settled["reserved"], settled["hard_limit"]) == (22.4, 0, 250)
    after = await ok(await c.get("/v1/customers/driver/entitlements/kwh"))
    assert (after["source"], after["usage"], after["balance"]) == ("override", 22.4, 177.6)


async def test_reservations_are_listed_by_customer_feature_and_status(tenant, db):
    c = tenant.client
    await _prepaid(c)
    first = (await _reserve(c, 10))["reservation"]["id"]
    second = (await _reserve(c, 20))["reservation"]["id"]
    third = (await _reserve(c, 5, ttl=1))["reservation"]["id"]
    await ok(await c.post(f"/v1/reservations/{first}/commit", json={"quantity": 8}))
    await asyncio.sleep(1.1)  # the third expires (no sweep has run: it reads as expired)
    every = await ok(await c.get("/v1/reservations", params={"customer": "driver", "feature": "kwh"}))
    assert [(r["id"], r["status"], r["customer"], r["feature"]) for r in every["items"]] == [
        (first, "committed", "driver", "kwh"), (second, "open", "driver", "kwh"), (third, "expired", "driver", "kwh")]
    for status, ids in (("open", [second]), ("expired", [third]), ("committed", [first]), ("released", [])):
        found = await ok(await c.get("/v1/reservations", params={"status": status}))
        assert [r["id"] for r in found["items"]] == ids, status
    paged = await ok(await c.get("/v1/reservations", params={"limit": 2}))
    rest = await ok(await c.get("/v1/reservations", params={"limit": 2, "cursor": paged["next_cursor"]}))
    assert [r["id"] for r in paged["items"] + rest["items"]] == [first, second, third]
    assert (await c.get("/v1/reservations", params={"customer": "nobody"})).status_code == 404
    assert (await c.get("/v1/reservations", params={"status": "pending"})).status_code == 422


async def test_two_reservations_never_hold_the_same_unit(tenant):
    c = tenant.client
    await _prepaid(c)
    first = await _reserve(c, 60)
    second = await _reserve(c, 60, status=200)
    assert (second["decision"], second["reason"], second["reserved"]) == ("deny", "hard_limit", 60)
    # Released, the units can be held again.
    released = await ok(await c.post(f"/v1/reservations/{first['reservation']['id']}/release"))
    assert (released["reservation"]["status"], released["usage"], released["reserved"]) == ("released", 0, 0)
    assert (await _reserve(c, 60))["decision"] == "allow"


async def test_commit_more_than_held_is_checked_against_the_hard_limit(tenant):
    c = tenant.client
    await _prepaid(c)
    a = (await _reserve(c, 30))["reservation"]["id"]
    await _reserve(c, 60)
    # 30 held here + 60 elsewhere: committing 41 would make 101.
    over = await c.post(f"/v1/reservations/{a}/commit", json={"quantity": 41})
    assert (over.status_code, over.json()["type"]) == (409, "hard_limit")
    assert "hard limit" in over.json()["detail"]
    assert (await ok(await c.get(f"/v1/reservations/{a}")))["status"] == "open"  # the hold stays
    denials = await ok(await c.get("/v1/denials", params={"customer": "driver", "feature": "kwh"}))
    assert [(d["reason"], d["quantity"]) for d in denials["items"]] == [("hard_limit", 41)]
    done = await ok(await c.post(f"/v1/reservations/{a}/commit", json={"quantity": 40}))
    assert (done["usage"], done["reserved"]) == (40, 60)
    # A top-up raises the limit a commit is refused at, and the refusal names that limit.
    await ok(await c.post("/v1/customers/driver/entitlements/kwh/grants", json={"amount": 5}), 201)
    b = (await _reserve(c, 5))["reservation"]["id"]
    over = await c.post(f"/v1/reservations/{b}/commit", json={"quantity": 6})
    assert over.status_code == 409 and "hard limit of 105 " in over.json()["detail"], over.text


async def test_double_release_release_after_commit_and_unknown_ids(tenant, db):
    c = tenant.client
    await _prepaid(c)
    a = (await _reserve(c, 10))["reservation"]["id"]
    released = await ok(await c.post(f"/v1/reservations/{a}/release"))
    assert (released["usage"], released["reserved"], released["balance"]) == (0, 0, 100)
    again = await c.post(f"/v1/reservations/{a}/release")
    assert (again.status_code, again.json()["type"]) == (409, "reservation_released")
    assert "already released" in again.json()["detail"]
    commit = await c.post(f"/v1/reservations/{a}/commit", json={"quantity": 1})
    assert (commit.status_code, commit.json()["type"]) == (409, "reservation_released")
    b = (await _reserve(c, 10))["reservation"]["id"]
    await ok(await c.post(f"/v1/reservations/{b}/commit", json={"quantity": 5}))
    late = await c.post(f"/v1/reservations/{b}/release")
    assert (late.status_code, late.json()["type"]) == (409, "reservation_committed")
    assert (await _check(c))["usage"] == 5
    for resp in (await c.get("/v1/reservations/res_nope"), await c.post("/v1/reservations/res_nope/release"),
                 await c.post("/v1/reservations/res_nope/commit", json={"quantity": 1})):
        assert (resp.status_code, resp.json()["type"]) == (404, "reservation_not_found")
    reader = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    body = {"customer": "driver", "feature": "kwh", "quantity": 1, "ttl_seconds": 60}
    assert (await c.post("/v1/reservations", json=body, headers=reader)).status_code == 403
    for bad in ({"quantity": 0}, {"quantity": -1}, {"ttl_seconds": 0}):
        assert (await c.post("/v1/reservations", json={**body, **bad})).status_code == 422
    missing = await c.post("/v1/reservations", json={**body, "customer": "nobody"})
    assert (missing.status_code, missing.json()["type"]) == (404, "customer_not_found")


async def test_not_entitled_and_not_metered(tenant):
    c = tenant.client
    await _prepaid(c)
    await feature(c, "beta")
    denied = await _reserve(c, 1, status=200, feature="beta")
    assert (denied["decision"], denied["reason"]) == ("deny", "not_entitled")
    await feature(c, "seats")
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": 2}])
    await customer(c, "acme")
    await subscribe(c, "acme", "team")
    body = {"customer": "acme", "feature": "seats", "quantity": 1, "ttl_seconds": 60}
    resp = await c.post("/v1/reservations", json=body)
    assert resp.status_code == 422 and "only metered" in resp.json()["detail"]


async def test_idempotent_create(tenant):
    c = tenant.client
    await _prepaid(c)
    first = await _reserve(c, 30, idempotency_key="session-1")
    retry = await c.post("/v1/reservations", json={"customer": "driver", "feature": "kwh", "quantity": "30.0",
                                                   "ttl_seconds": 600, "idempotency_key": "session-1"})
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"  # as the first
    assert retry.json()["reservation"]["id"] == first["reservation"]["id"]
    assert (retry.json()["decision"], retry.json()["reserved"]) == ("allow", 30)
    assert (await _check(c))["balance"] == 70  # held once
    other = await c.post("/v1/reservations", json={"customer": "driver", "feature": "kwh", "quantity": 31,
                                                   "ttl_seconds": 600, "idempotency_key": "session-1"})
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    header = await c.post("/v1/reservations", headers={"Idempotency-Key": "session-1"},
                          json={"customer": "driver", "feature": "kwh", "quantity": 30, "ttl_seconds": 600})
    assert header.json()["reservation"]["id"] == first["reservation"]["id"]


async def _create(db: Database, tenant_id: str, quantity: str, at: datetime, ttl: int = 60) -> Any:
    async with db.transaction() as session:
        request = service.ReservationRequest("driver", "kwh", Decimal(quantity), ttl)
        return await service.create(session, tenant_id, request, at=at)


async def _service_check(db: Database, tenant_id: str, at: datetime) -> checks.CheckResult:
    async with db.transaction() as session:
        return await checks.check(session, tenant_id, checks.CheckRequest("driver", "kwh"), at=at)


async def test_a_refused_hold_retried_with_its_key_gets_the_refusal_again(tenant):
    """A charger retrying a refused session after a timeout learns the first answer: nothing is
    decided again (not even once room was made meanwhile) and one denial is recorded."""
    c = tenant.client
    await _prepaid(c)
    first = await _reserve(c, 100)
    body = {"customer": "driver", "feature": "kwh", "quantity": 30, "ttl_seconds": 600, "idempotency_key": "s-1"}
    refused = await c.post("/v1/reservations", json=body)
    assert (refused.status_code, refused.json()["decision"]) == (200, "deny")
    await ok(await c.post(f"/v1/reservations/{first['reservation']['id']}/release"))
    again = await c.post("/v1/reservations", json={**body, "quantity": "30.0"})
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (200, "true")
    assert again.json() == refused.json()
    by_header = await c.post("/v1/reservations", headers={"Idempotency-Key": "s-1"},
                             json={k: v for k, v in body.items() if k != "idempotency_key"})
    assert by_header.json() == refused.json()
    other = await c.post("/v1/reservations", json={**body, "quantity": 31})
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    denials = await ok(await c.get("/v1/denials", params={"customer": "driver"}))
    assert len(denials["items"]) == 1
    assert (await _check(c))["balance"] == 100  # nothing held by any retry


async def test_an_expired_reservation_gives_its_hold_back(tenant, db):
    """A charger that goes silent holds nothing once its reservation expires (no sleeping)."""
    await _prepaid(tenant.client)
    t0 = utcnow() + timedelta(seconds=1)
    silent = await _create(db, tenant.id, "60", t0, ttl=60)
    assert silent.reservation is not None
    denied = await _create(db, tenant.id, "60", t0 + timedelta(seconds=59))
    assert (denied.decision.decision, denied.reservation) == ("deny", None)
    # At expiry the check sweeps it: the balance is whole again.
    at = t0 + timedelta(seconds=60)
    seen = await _service_check(db, tenant.id, at)
    assert seen.decision.balance == 100
    async with db.transaction() as session:
        gone = await service.get(session, tenant.id, silent.reservation.id)
        assert (gone.status, gone.closed_at) == ("expired", silent.reservation.expires_at)
    # A reservation is also swept by the next reservation, without any check in between.
    second = await _create(db, tenant.id, "60", at, ttl=60)
    assert second.reserved == 60
    taken = await _create(db, tenant.id, "60", at + timedelta(seconds=60))
    assert (taken.decision.decision, taken.reserved) == ("allow", 60)


async def test_a_reservation_past_its_expiry_reads_as_expired_before_any_sweep(tenant, db):
    """What GET says agrees with what a commit would answer, whenever the sweep comes."""
    await _prepaid(tenant.client)
    lapsed = (await _reserve(tenant.client, 30))["reservation"]
    async with db.transaction() as session:  # its time runs out (no sleeping)
        await session.execute(update(Reservation).where(Reservation.id == lapsed["id"])
                              .values(expires_at=utcnow() - timedelta(seconds=1)))
    body = await ok(await tenant.client.get(f"/v1/reservations/{lapsed['id']}"))
    assert (body["status"], body["closed_at"]) == ("expired", body["expires_at"])
    commit = await tenant.client.post(f"/v1/reservations/{lapsed['id']}/commit", json={"quantity": 1})
    assert (commit.status_code, commit.json()["type"]) == (409, "reservation_expired")


async def test_commit_or_release_after_expiry_is_409(tenant, db):
    await _prepaid(tenant.client)
    t0 = utcnow() + timedelta(seconds=1)
    a = (await _create(db, tenant.id, "30", t0)).reservation
    b = (await _create(db, tenant.id, "30", t0)).reservation
    later = t0 + timedelta(seconds=60)
    for action in ("commit", "release"):
        with pytest.raises(Conflict, match="expired") as info:
            async with db.transaction() as session:
                if action == "commit":
                    await service.commit(session, tenant.id, a.id, Decimal(10), at=later)
                else:
                    await service.release(session, tenant.id, a.id, at=later)
        assert info.value.code == "reservation_expired"
    await _service_check(db, tenant.id, later)  # sweeps both
    with pytest.raises(Conflict, match="expired"):
        async with db.transaction() as session:
            await service.commit(session, tenant.id, b.id, Decimal(10), at=later)
    assert (await _service_check(db, tenant.id, later)).decision.usage == 0
    # Over HTTP (the real clock), a reservation that expired long ago is a 409 too.
    resp = await tenant.client.post(f"/v1/reservations/{a.id}/commit", json={"quantity": 1})
    assert (resp.status_code, resp.json()["type"]) == (409, "reservation_expired")


async def _race(clients: list[httpx.AsyncClient], n: int) -> list[dict[str, Any]]:
    body = {"customer": "driver", "feature": "kwh", "quantity": 10, "ttl_seconds": 600}
    responses = await asyncio.gather(*(clients[i % len(clients)].post("/v1/reservations", json=body)
                                       for i in range(n)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses if r.status_code >= 300]
    return [r.json() for r in responses]


async def test_concurrent_reservations_never_pass_the_hard_limit(tenant, settings):
    """32 concurrent reservations of 10 against a hard limit of 100, over four engines: 10 held."""
    await _prepaid(tenant.client)
    databases = [Database(settings) for _ in range(4)]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, db=d)),
                          base_url="http://allotment.test", headers={"Authorization": f"Bearer {tenant.admin}"})
        for d in databases
    ]
    try:
        answers = await _race(clients, 32)
    finally:
        for client, database in zip(clients, databases, strict=True):
            await client.aclose()
            await database.dispose()
    held = [a for a in answers if a["reservation"] is not None]
    assert len(held) == 10 and all(a["decision"] == "allow" for a in held)
    assert sorted(a["reserved"] for a in held) == list(range(10, 101, 10))
    assert (await _check(tenant.client))["balance"] == 0
    denials = await ok(await tenant.client.get("/v1/denials", params={"customer": "driver"}))
    assert len(denials["items"]) == 22 + 1  # the 22 refused reservations and the check of 1 unit


async def test_the_state_view_does_not_count_an_expired_hold(tenant, db):
    """Before anything sweeps it, an expired hold no longer lowers the balance shown."""
    await _prepaid(tenant.client)
    t0 = utcnow() + timedelta(seconds=1)
    await _create(db, tenant.id, "100", t0)
    async with db.transaction(readonly=True) as session:
        held = await state.get_state(session, tenant.id, "driver", "kwh", at=t0 + timedelta(seconds=59))
        gone = await state.get_state(session, tenant.id, "driver", "kwh", at=t0 + timedelta(seconds=60))
    assert (held.balance, held.has_access) == (0, False)
    assert (gone.balance, gone.has_access) == (100, True)


async def test_a_retried_commit_with_its_key_gets_the_first_answer(tenant):
    """A charger retrying a commit after a timeout learns it went through, and nothing counts twice."""
    c = tenant.client
    await _prepaid(c)
    res = (await _reserve(c, 30))["reservation"]["id"]
    headers = {"Idempotency-Key": "commit-1"}
    first = await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 22.4}, headers=headers)
    again = await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 22.4}, headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert (await _check(c))["usage"] == 22.4


async def test_a_commit_key_reused_with_another_quantity_is_409(tenant):
    c = tenant.client
    await _prepaid(c)
    res = (await _reserve(c, 30))["reservation"]["id"]
    headers = {"Idempotency-Key": "commit-1"}
    await ok(await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 20}, headers=headers))
    other = await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 25}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await _check(c))["usage"] == 20


async def test_a_commit_key_reused_on_another_reservation_is_409_not_the_first_answer(tenant):
    c = tenant.client
    await _prepaid(c)
    a = (await _reserve(c, 10))["reservation"]["id"]
    b = (await _reserve(c, 10))["reservation"]["id"]
    headers = {"Idempotency-Key": "commit-1"}
    await ok(await c.post(f"/v1/reservations/{a}/commit", json={"quantity": 5}, headers=headers))
    other = await c.post(f"/v1/reservations/{b}/commit", json={"quantity": 5}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await ok(await c.get(f"/v1/reservations/{b}")))["status"] == "open"


async def test_a_refused_commit_is_not_remembered_under_its_key(tenant):
    """A commit refused at the hard limit can be corrected and sent again with the same key."""
    c = tenant.client
    await _prepaid(c)
    res = (await _reserve(c, 30))["reservation"]["id"]
    headers = {"Idempotency-Key": "commit-1"}
    over = await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 101}, headers=headers)
    assert (over.status_code, over.json()["type"]) == (409, "hard_limit")
    done = await ok(await c.post(f"/v1/reservations/{res}/commit", json={"quantity": 30}, headers=headers))
    assert done["reservation"]["status"] == "committed"


async def test_a_retried_release_with_its_key_gets_the_first_answer(tenant):
    c = tenant.client
    await _prepaid(c)
    res = (await _reserve(c, 30))["reservation"]["id"]
    headers = {"Idempotency-Key": "release-1"}
    first = await c.post(f"/v1/reservations/{res}/release", headers=headers)
    again = await c.post(f"/v1/reservations/{res}/release", headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert (await c.post(f"/v1/reservations/{res}/release")).status_code == 409  # without it: released


@pytest.mark.parametrize("scope", ["read", "ingest", "admin"])
async def test_any_key_lists_and_reads_reservations(tenant, db, scope):
    """Read keys (dashboards) and ingest keys (the charger that holds them) both see reservations."""
    c = tenant.client
    await _prepaid(c)
    res = (await _reserve(c, 10))["reservation"]["id"]
    headers = {"Authorization": f"Bearer {await tenant.key(scope, db)}"}
    listed = await ok(await c.get("/v1/reservations", headers=headers))
    assert [r["id"] for r in listed["items"]] == [res]
    assert (await ok(await c.get(f"/v1/reservations/{res}", headers=headers)))["status"] == "open"


@pytest.mark.backends("postgresql")
async def test_a_commit_and_a_check_sweeping_a_hold_after_a_top_up_both_answer(tenant, db, database_url):
    """A commit and a consume that gives an expired hold back, the first writes since a top-up:
    both keep the grants' usage and move the counter, one after the other, and neither fails
    (taking a grant and the counter in opposite orders, they deadlocked)."""
    c = tenant.client
    await _prepaid(c)
    await _reserve(c, 10, ttl=60)
    lasting = await _reserve(c, 20, ttl=3600)
    promotion = await ok(await c.post("/v1/customers/driver/entitlements/kwh/grants", json={
        "amount": 50, "expires_at": (utcnow() + timedelta(seconds=30)).isoformat()}), 201)
    await ok(await c.post("/v1/check", json={"customer": "driver", "feature": "kwh", "consume": True}))
    await ok(await c.post("/v1/customers/driver/entitlements/kwh/grants", json={"amount": 50}), 201)
    now = utcnow()  # the promotion has expired at both instants below, the first hold at the later

    async def commit() -> None:
        async with db.transaction() as session:
            await service.commit(session, tenant.id, lasting["reservation"]["id"], Decimal(15),
                                 at=now + timedelta(seconds=59))

    async def consume() -> None:
        async with db.transaction() as session:
            await checks.check(session, tenant.id, checks.CheckRequest("driver", "kwh", Decimal(5), consume=True),
                               at=now + timedelta(seconds=61))

    ended, watch = await asyncpg.connect(_admin_dsn(database_url)), await asyncpg.connect(_admin_dsn(database_url))
    try:
        holding = ended.transaction()
        await holding.start()
        # The commit keeps the top-up's usage, then waits here to keep the promotion's.
        await ended.execute("SELECT 1 FROM grants WHERE id = $1 FOR UPDATE", promotion["id"])
        committing = asyncio.create_task(commit())
        await until(lambda: waiting(watch, 1))
        consuming = asyncio.create_task(consume())  # gives the expired hold back, then keeps usage
        await until(lambda: waiting(watch, 2))
        await holding.rollback()
        await asyncio.gather(committing, consuming)
    finally:
        await ended.close()
        await watch.close()
    state_now = await ok(await c.get("/v1/customers/driver/entitlements/kwh"))
    assert (state_now["usage"], state_now["reserved"]) == (21, 0)
