"""Events move the live counters: a check right after an acknowledged ingest sees the usage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from allotment.db import fetch
from allotment.entitlements.models import CustomerEntitlement
from allotment.types import from_micros
from tests.entitlements.catalogue import feature, metered, ok, plan, subscribe
from tests.helpers import event, meter


async def _setup(c: Any, *, hard: int, starts_at: str | None = None, **feature_extra: Any) -> None:
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await feature(c, "tokens", meter="tokens", **feature_extra)
    await plan(c, "starter", [metered("tokens", hard, hard, hard)])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1", "acme-2"]}), 201)
    await subscribe(c, "acme", "starter", **({"starts_at": starts_at} if starts_at else {}))


async def _usage(c: Any, quantity: int = 1) -> dict[str, Any]:
    body = {"customer": "acme", "feature": "tokens", "quantity": quantity}
    return await ok(await c.post("/v1/check", json=body))  # type: ignore[no-any-return]


async def test_ingested_usage_is_seen_by_the_next_check(tenant):
    c = tenant.client
    await _setup(c, hard=100)
    resp = await c.post("/v1/events", json=[event("acme-1", tokens=60, model="a"), event("acme-2", tokens=30, model="b")])
    assert resp.json()["accepted"] == 2
    state = await _usage(c, 10)
    assert (state["usage"], state["decision"]) == (90, "allow")
    assert (await _usage(c, 11))["decision"] == "deny"


async def test_an_add_on_bought_after_ingested_usage_is_burned_only_by_usage_after_it(tenant):
    c = tenant.client
    await _setup(c, hard=10)
    await c.post("/v1/events", json=[event("acme-1", tokens=9, model="a")])
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    add_on = await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants",
                                   json={"amount": 3, "expires_at": expires}), 201)
    assert (await ok(await c.get(f"/v1/grants/{add_on['id']}")))["balance"] == 3
    await c.post("/v1/events", json=[event("acme-2", tokens=1, model="b")])
    assert (await ok(await c.get(f"/v1/grants/{add_on['id']}")))["balance"] == 2
    state = await _usage(c, 3)
    assert (state["usage"], state["balance"], state["decision"]) == (10, 3, "allow")


async def test_usage_reported_late_for_before_a_plan_change_counts_on_the_plan_in_force(tenant):
    """A record of usage from before the change arrives after it: it lands in the period's
    counter, which the new plan's row took over."""
    c = tenant.client
    await _setup(c, hard=100)
    await plan(c, "big", [metered("tokens", 200, 200, 200)])
    sub = (await ok(await c.get("/v1/subscriptions", params={"customer": "acme"})))["items"][0]
    await c.post("/v1/events", json=[event("acme-1", tokens=10, model="a")])
    before_change = datetime.now(UTC).isoformat()
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "big"}))
    late = await c.post("/v1/events", json=[event("acme-1", tokens=7, model="a", time=before_change)])
    assert late.json()["accepted"] == 1
    state = await _usage(c, 1)
    assert (state["usage"], state["balance"], state["hard_limit"]) == (17, 183, 200)


async def test_events_taking_usage_below_zero_are_stored_with_their_batch(tenant):
    """A correction larger than the period's usage is a fact like any other: stored, counted
    by the meter, and read by checks as no usage (a period never credits beyond what it
    includes)."""
    c = tenant.client
    await _setup(c, hard=100)
    resp = await c.post("/v1/events", json=[event("acme-1", tokens=7, model="a"), event("acme-1", tokens=-50, model="a")])
    assert (resp.status_code, resp.json()["accepted"]) == (200, 2), resp.text
    state = await _usage(c, 100)
    assert (state["usage"], state["balance"], state["decision"]) == (0, 100, "allow")
    assert (await _usage(c, 101))["decision"] == "deny"
    await c.post("/v1/events", json=[event("acme-1", tokens=60, model="a")])
    assert (await _usage(c))["usage"] == 17  # the counter itself stayed exact


async def test_a_correction_below_zero_on_a_counted_period_keeps_its_batch(tenant):
    """A correction that takes a period's counter below zero, sent after the period was
    counted, is stored with the rest of its batch (the counter's bound checks must not
    overflow on a negative addition)."""
    c = tenant.client
    await _setup(c, hard=10)
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")])
    resp = await c.post("/v1/events", json=[event("acme-1", tokens=-5, model="a"), event("acme-1", tokens=1, model="a")])
    assert (resp.status_code, resp.json()["accepted"]) == (200, 2), resp.text
    state = await _usage(c)
    assert (state["usage"], state["balance"]) == (0, 10)


async def _consume(c: Any, quantity: int) -> dict[str, Any]:
    body = {"customer": "acme", "feature": "tokens", "quantity": quantity, "consume": True}
    return await ok(await c.post("/v1/check", json=body))  # type: ignore[no-any-return]


async def test_usage_below_zero_gives_no_extra_room_to_consume(tenant):
    """Below zero reads as no usage: a consume past the hard limit from there is denied and
    records nothing, and one within it counts from zero, as its answer says."""
    c = tenant.client
    await _setup(c, hard=10)
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")])
    await c.post("/v1/events", json=[event("acme-1", tokens=-5, model="a")])
    denied = await _consume(c, 12)
    assert (denied["decision"], denied["usage"]) == ("deny", 0)
    assert (await _usage(c))["usage"] == 0
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme"}))
    assert [d["quantity"] for d in denials["items"]] == [12]
    taken = await _consume(c, 5)
    assert (taken["decision"], taken["usage"], taken["balance"]) == ("allow", 5, 5)
    assert (await _usage(c))["usage"] == 5
    assert (await _consume(c, 6))["decision"] == "deny"
    assert (await _consume(c, 5))["usage"] == 10


async def test_concurrent_consumes_from_below_zero_stop_at_the_hard_limit(tenant):
    """Consumes decided together (in one batch) count from zero as well: exactly the hard
    limit is allowed."""
    c = tenant.client
    await _setup(c, hard=10)
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")])
    await c.post("/v1/events", json=[event("acme-1", tokens=-5, model="a")])
    answers = await asyncio.gather(*(_consume(c, 1) for _ in range(16)))
    assert sorted(a["decision"] for a in answers).count("allow") == 10
    assert (await _usage(c))["usage"] == 10


async def test_usage_below_zero_gives_no_extra_room_to_hold(tenant):
    """Reservations judge usage below zero as none too, and a commit counts from zero."""
    c = tenant.client
    await _setup(c, hard=10)
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")])
    await c.post("/v1/events", json=[event("acme-1", tokens=-5, model="a")])
    body = {"customer": "acme", "feature": "tokens", "quantity": 11, "ttl_seconds": 60}
    refused = await ok(await c.post("/v1/reservations", json=body))
    assert (refused["decision"], refused["reservation"]) == ("deny", None)
    held = await ok(await c.post("/v1/reservations", json={**body, "quantity": 10}), 201)
    assert held["decision"] == "allow"
    await ok(await c.post(f"/v1/reservations/{held['reservation']['id']}/commit", json={"quantity": 4}))
    assert (await _usage(c))["usage"] == 4


async def test_duplicate_events_do_not_move_the_counter_twice(tenant):
    c = tenant.client
    await _setup(c, hard=100)
    batch = [event("acme-1", tokens=40, model="a")]
    await c.post("/v1/events", json=batch)
    await c.post("/v1/events", json=batch)
    assert (await _usage(c))["usage"] == 40


async def test_other_customers_subjects_do_not_count(tenant):
    c = tenant.client
    await _setup(c, hard=100)
    await c.post("/v1/events", json=[event("stranger", tokens=50, model="a")])
    assert (await _usage(c))["usage"] == 0


async def test_feature_group_filter_counts_only_matching_usage(tenant):
    c = tenant.client
    await _setup(c, hard=100, meter_group_filter={"model": "a"})
    await c.post("/v1/events", json=[event("acme-1", tokens=7, model="a"), event("acme-1", tokens=5, model="b")])
    assert (await _usage(c))["usage"] == 7


async def test_feature_group_filter_on_a_long_value_counts_its_usage(tenant):
    """A filter naming a group value too long to be kept whole in rollup keys still matches it."""
    c = tenant.client
    long = "m" * 1100
    await _setup(c, hard=100, meter_group_filter={"model": long})
    await c.post("/v1/events", json=[event("acme-1", tokens=7, model=long), event("acme-1", tokens=5, model=long + "!")])
    assert (await _usage(c))["usage"] == 7


async def test_event_from_before_the_entitlement_began_does_not_count(tenant):
    c = tenant.client
    await _setup(c, hard=100)
    await c.post("/v1/events", json=[event("acme-1", tokens=9, model="a", time="2020-01-15T10:00:00Z")])
    assert (await _usage(c))["usage"] == 0


async def test_a_backdated_subscription_counts_the_usage_since_it_started(tenant):
    """Events stored before the subscription was created count from its start on, exactly
    once, and events reported late for that span count as well."""
    c = tenant.client
    now = datetime.now(UTC)
    start = now - timedelta(days=2)

    def at(delta: timedelta) -> str:
        return (start + delta).isoformat()

    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1", "acme-2"]}), 201)
    await c.post("/v1/events", json=[
        event("acme-1", tokens=100, model="a", time=at(-timedelta(hours=1))),  # before it started
        event("acme-1", tokens=7, model="a", time=at(timedelta(hours=1))),
        event("acme-2", tokens=5, model="b", time=(now - timedelta(minutes=1)).isoformat()),
        event("stranger", tokens=50, model="a", time=at(timedelta(hours=1))),
    ])
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 100, 100, 100)])
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    body = await _usage(c)
    assert (body["usage"], body["period_start"]) == (12, start.isoformat().replace("+00:00", "Z"))
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a", time=at(timedelta(hours=2)))])
    assert (await _usage(c))["usage"] == 15
    page = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert page["usage"] == 15


async def test_events_ingested_while_a_backdated_subscription_is_created_count_once(tenant):
    """Batches keep arriving while the subscription is created: each event is counted either
    by the backfill or by ingest, never by both and never by neither."""
    c = tenant.client
    start = datetime.now(UTC) - timedelta(days=1)
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 10**9, None, None)])
    when = (start + timedelta(hours=1)).isoformat()

    async def send(n: int) -> None:
        for _ in range(n):
            resp = await c.post("/v1/events", json=[event("acme-1", tokens=1, model="a", time=when) for _ in range(20)])
            assert resp.json()["accepted"] == 20

    await send(3)
    await asyncio.gather(send(10), send(10), subscribe(c, "acme", "starter", starts_at=start.isoformat()))
    assert (await _usage(c))["usage"] == 23 * 20


async def test_an_ad_hoc_entitlement_started_in_the_past_counts_the_usage_since(tenant):
    c = tenant.client
    now = datetime.now(UTC)
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await c.post("/v1/events", json=[event("acme-1", tokens=50, model="a", time=(now - timedelta(hours=5)).isoformat()),
                                     event("acme-1", tokens=8, model="a", time=(now - timedelta(hours=1)).isoformat())])
    await feature(c, "tokens", meter="tokens")
    body = {"feature": "tokens", "kind": "metered", "included": 100, "hard_limit": 100}
    future = await c.post("/v1/customers/acme/entitlements", json={**body, "starts_at": (now + timedelta(hours=1)).isoformat()})
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "starts_at", future.text
    made = await ok(await c.post("/v1/customers/acme/entitlements",
                                 json={**body, "starts_at": (now - timedelta(hours=2)).isoformat()}), 201)
    assert datetime.fromisoformat(made["active_from"]) == now - timedelta(hours=2)
    assert (await _usage(c))["usage"] == 8


async def test_a_feature_added_by_migrating_an_older_subscription_counts_from_then(tenant):
    """Only creating a subscription reaches back to its start: a feature a later plan version
    adds holds from the migration on, not over periods in which the customer lacked it."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await feature(c, "tokens", meter="tokens")
    await feature(c, "sso")
    await plan(c, "starter", [{"feature": "sso", "kind": "boolean"}])
    sub = await subscribe(c, "acme", "starter", starts_at=(datetime.now(UTC) - timedelta(days=2)).isoformat())
    await c.post("/v1/events", json=[event("acme-1", tokens=9, model="a",
                                           time=(datetime.now(UTC) - timedelta(hours=1)).isoformat())])
    await plan(c, "starter", [{"feature": "sso", "kind": "boolean"}, metered("tokens", 100, 100, 100)])
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/migrate"))
    assert (await _usage(c))["usage"] == 0


async def test_a_backdated_subscription_does_not_count_what_an_earlier_one_counted(tenant):
    """The customer's first subscription counted its events until it was canceled; one
    backdated over that span starts where the first ended, so nothing counts twice."""
    c = tenant.client
    await _setup(c, hard=100)
    await c.post("/v1/events", json=[event("acme-1", tokens=9, model="a")])
    first = (await ok(await c.get("/v1/subscriptions", params={"customer": "acme"})))["items"][0]
    await ok(await c.post(f"/v1/subscriptions/{first['id']}/cancel", json={}))
    await plan(c, "pro", [metered("tokens", 500, 500, 500)])
    await subscribe(c, "acme", "pro", starts_at=(datetime.now(UTC) - timedelta(days=1)).isoformat())
    assert (await _usage(c))["usage"] == 0
    await c.post("/v1/events", json=[event("acme-1", tokens=4, model="a")])
    assert (await _usage(c))["usage"] == 4


async def test_a_subscription_backdated_past_a_reset_counts_each_period_in_its_own(tenant, db):
    c = tenant.client
    now = datetime.now(UTC)
    start = now - timedelta(days=45)  # the first monthly period ended some 14 days ago
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await c.post("/v1/events", json=[
        event("acme-1", tokens=20, model="a", time=(start + timedelta(days=1)).isoformat()),
        event("acme-1", tokens=6, model="a", time=(now - timedelta(hours=1)).isoformat()),
    ])
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 100, 100, 100)])
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    assert (await _usage(c))["usage"] == 6
    async with db.transaction(readonly=True) as session:
        sql = "SELECT used FROM entitlement_usage ORDER BY period_start"
        assert [used for (used,) in await fetch(session, sql, sql)] == [20_000_000, 6_000_000]


async def test_late_event_counts_in_its_own_period_not_the_current_one(tenant, db):
    """Usage reported late for an earlier month lands in that month's counter."""
    c = tenant.client
    await _setup(c, hard=100, starts_at="2020-01-01T00:00:00Z")
    async with db.transaction() as session:  # as if provisioned when the subscription began
        await session.execute(
            update(CustomerEntitlement).values(active_from=datetime(2020, 1, 1, tzinfo=UTC))
        )
    await c.post("/v1/events", json=[event("acme-1", tokens=9, model="a", time="2020-01-15T10:00:00Z")])
    assert (await _usage(c))["usage"] == 0
    await c.post("/v1/events", json=[event("acme-1", tokens=4, model="a")])
    assert (await _usage(c))["usage"] == 4
    async with db.transaction(readonly=True) as session:
        sql = "SELECT period_start, used FROM entitlement_usage ORDER BY period_start"
        counters = await fetch(session, sql, sql)
    assert (from_micros(counters[0][0]), counters[0][1]) == (datetime(2020, 1, 1, tzinfo=UTC), 9_000_000)


async def test_usage_an_expired_grant_paid_for_stays_paid_when_events_follow(tenant):
    """A 4-unit add-on (burns first) pays for 3 units reported by events and then expires;
    events after the expiry burn the monthly grant only: 10 - 2 left of it."""
    c = tenant.client
    await _setup(c, hard=0)
    grants = "/v1/customers/acme/entitlements/tokens/grants"
    await ok(await c.post(grants, json={"amount": 10, "priority": 5}), 201)
    expiry = datetime.now(UTC) + timedelta(seconds=1.5)
    await ok(await c.post(grants, json={"amount": 4, "priority": 1, "expires_at": expiry.isoformat()}), 201)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")]))
    await asyncio.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.1)
    await ok(await c.post("/v1/events", json=[event("acme-2", tokens=2, model="a")]))
    body = await _usage(c)
    assert (body["usage"], body["hard_limit"], body["balance"]) == (5, 13, 8)


async def test_usage_ingested_after_a_grant_was_voided_is_not_paid_by_it(tenant):
    """10 included and a grant of 5; 12 used, the grant voided (it paid 2), then 3 more arrive
    as events: the cap is 12, not 15, so the voided grant's unspent 3 stay gone."""
    c = tenant.client
    await _setup(c, hard=10)
    created = await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 5}), 201)
    await c.post("/v1/events", json=[event("acme-1", tokens=12, model="a")])
    await ok(await c.post(f"/v1/grants/{created['id']}/void", json={"reason": "refunded"}))
    await c.post("/v1/events", json=[event("acme-1", tokens=3, model="a")])
    state = await _usage(c)
    assert (state["usage"], state["hard_limit"], state["decision"]) == (15, 12, "deny")


async def test_usage_reported_late_for_before_a_void_is_paid_by_the_voided_grant(tenant):
    """10 included and a grant of 5; 12 used, the grant voided (it paid 2), then 3 more reported
    late for an instant before the void: the grant had paid them too, so the cap is 15."""
    c = tenant.client
    await _setup(c, hard=10)
    created = await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 5}), 201)
    await c.post("/v1/events", json=[event("acme-1", tokens=12, model="a")])
    await ok(await c.post(f"/v1/grants/{created['id']}/void", json={"reason": "refunded"}))
    while_live = datetime.fromisoformat(created["effective_at"]) + timedelta(milliseconds=1)
    await c.post("/v1/events", json=[event("acme-2", tokens=3, model="a", time=while_live.isoformat())])
    state = await _usage(c)
    assert (state["usage"], state["hard_limit"], state["decision"]) == (15, 15, "deny")


async def test_usage_reported_late_for_before_an_add_on_was_bought_is_not_the_add_ons_to_pay(tenant):
    """5 used, an add-on of 3 bought, 1 used after it (the add-on paid it), then 4 reported late
    for before the purchase: those are the bundle's, and the add-on still holds 2."""
    c = tenant.client
    now = datetime.now(UTC)
    await _setup(c, hard=10, starts_at=(now - timedelta(hours=1)).isoformat())
    earlier = (now - timedelta(minutes=30)).isoformat()
    await c.post("/v1/events", json=[event("acme-1", tokens=5, model="a", time=earlier)])
    expires = (now + timedelta(days=7)).isoformat()
    add_on = await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants",
                                   json={"amount": 3, "expires_at": expires}), 201)
    await c.post("/v1/events", json=[event("acme-1", tokens=1, model="a")])
    await c.post("/v1/events", json=[event("acme-2", tokens=4, model="a", time=earlier)])
    assert (await ok(await c.get(f"/v1/grants/{add_on['id']}")))["balance"] == 2
    state = await _usage(c, 3)
    assert (state["usage"], state["balance"], state["decision"]) == (10, 3, "allow")


async def _carrying_over_last_period(c: Any) -> None:
    """acme on a plan that carries overage (10 included), since 45 days ago: its first period
    used 12 (reported late by events), so the current one began with 2 carried in."""
    start = datetime.now(UTC) - timedelta(days=45)
    await ok(await c.post("/v1/meters", json=meter(group_by={"model": "$.model"})), 201)
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 10, 10, 1000) | {"overage_at_reset": "carry"}])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    late = (start + timedelta(days=3)).isoformat()
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=12, model="a", time=late)]))


async def test_events_first_in_a_period_count_the_overage_carried_in_once(tenant):
    """The period's first usage arrives by events: checks then see the carry plus the events, once."""
    c = tenant.client
    await _carrying_over_last_period(c)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6, model="a")]))
    assert (await _usage(c))["usage"] == 8
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=1, model="a")]))
    assert (await _usage(c))["usage"] == 9


async def test_concurrent_events_and_checks_first_in_a_period_carry_the_overage_in_once(tenant):
    """Batches and checks racing to be the period's first carry the 2 in exactly once."""
    c = tenant.client
    await _carrying_over_last_period(c)

    async def send() -> None:
        for _ in range(5):
            resp = await c.post("/v1/events", json=[event("acme-1", tokens=1, model="a") for _ in range(3)])
            assert resp.json()["accepted"] == 3

    async def look() -> None:
        for _ in range(5):
            await _usage(c)

    await asyncio.gather(send(), send(), look(), look())
    assert (await _usage(c))["usage"] == 2 + 2 * 5 * 3
