"""Subscriptions and provisioning: the customer's entitlements follow its plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from allotment.entitlements import check as checks
from allotment.entitlements import subscriptions
from allotment.entitlements.schemas import SubscriptionCreate
from tests.entitlements.catalogue import (
    boolean,
    customer,
    feature,
    metered,
    ok,
    open_rows,
    plan,
    rows,
    subscribe,
)


async def _catalogue(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await feature(c, "sso")
    await feature(c, "projects")
    await plan(c, "starter", [metered("api-calls", 1000, 1000, 1200)])
    await plan(c, "pro", [
        metered("api-calls", 10_000, 12_000, 15_000), boolean("sso"),
        {"feature": "projects", "kind": "static", "config": {"max_projects": 10}},
    ])
    return await customer(c, "acme")


async def test_subscription_provisions_the_plans_entitlements(tenant, db):
    """Each plan entitlement becomes one customer row with the plan's values and the sub's zone."""
    acme = await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro", time_zone="Europe/Paris")
    assert sub["id"].startswith("sub_") and (sub["status"], sub["plan_version"]) == ("active", 1)
    got = {r.kind: (r.included, r.soft_limit, r.hard_limit, r.config) for r in await open_rows(db, tenant.id, acme["id"])}
    assert got == {
        "metered": (Decimal(10_000), Decimal(12_000), Decimal(15_000), None),
        "boolean": (None, None, None, None),
        "static": (None, None, None, {"max_projects": 10}),
    }
    for row in await rows(db, tenant.id, acme["id"]):
        assert (row.source, row.subscription_id, row.time_zone) == ("plan", sub["id"], "Europe/Paris")
        assert row.id.startswith("ent_") and row.usage_anchor == datetime.fromisoformat(sub["billing_anchor"])


async def test_times_given_with_an_offset_come_back_in_utc(tenant):
    """Stored and returned in UTC, whatever offset the request used."""
    await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro", billing_anchor="2026-11-27T00:00:00+11:00",
                          time_zone="Pacific/Noumea")
    assert sub["billing_anchor"] in ("2026-11-26T13:00:00Z", "2026-11-26T13:00:00+00:00")
    again = await ok(await tenant.client.get(f"/v1/subscriptions/{sub['id']}"))
    assert again["billing_anchor"] == sub["billing_anchor"]


async def test_second_subscription_for_a_customer_is_409(tenant):
    await _catalogue(tenant.client)
    await subscribe(tenant.client, "acme", "starter")
    resp = await tenant.client.post("/v1/subscriptions", json={"customer": "acme", "plan": "pro"})
    assert resp.status_code == 409


async def test_change_plan_now_reprovisions_at_once(tenant, db):
    """The old rows end now and the new plan's rows start now."""
    acme = await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "starter")
    new = await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                                            json={"plan": "pro", "at": "now"}))
    assert (new["plan"], new["status"]) == ("pro", "active")
    assert (await ok(await tenant.client.get(f"/v1/subscriptions/{sub['id']}")))["status"] == "canceled"
    live = await open_rows(db, tenant.id, acme["id"])
    assert {r.subscription_id for r in live} == {new["id"]} and len(live) == 3
    old = [r for r in await rows(db, tenant.id, acme["id"]) if r.subscription_id == sub["id"]]
    assert [r.active_to for r in old] == [datetime.fromisoformat(new["starts_at"])]


def _next_local_boundary(tz: ZoneInfo, day: int) -> datetime:
    """The next local midnight on `day` of a month, after now."""
    now = datetime.now(tz)
    candidate = now.replace(day=day, hour=0, minute=0, second=0, microsecond=0)
    if candidate <= now:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        candidate = candidate.replace(year=year, month=month)
    return candidate.astimezone(UTC)


async def test_change_plan_at_period_end_schedules_it_at_the_local_boundary(tenant, db):
    """In New York, the scheduled start is local midnight of the anchor day, not UTC midnight."""
    acme = await _catalogue(tenant.client)
    zone = ZoneInfo("America/New_York")
    anchor = datetime(2024, 1, 15, tzinfo=zone).isoformat()
    sub = await subscribe(tenant.client, "acme", "starter", time_zone="America/New_York",
                          starts_at=anchor, billing_anchor=anchor)
    new = await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                                            json={"plan": "pro", "at": "period_end"}))
    boundary = _next_local_boundary(zone, 15)
    starts_at = datetime.fromisoformat(new["starts_at"])
    assert starts_at == boundary and starts_at.hour in (4, 5)
    assert new["status"] == "scheduled"
    assert datetime.fromisoformat((await ok(await tenant.client.get(f"/v1/subscriptions/{sub['id']}")))["ends_at"]) == boundary
    by_feature = {r.included: r for r in await rows(db, tenant.id, acme["id"]) if r.kind == "metered"}
    assert by_feature[Decimal(1000)].active_to == boundary  # starter until the boundary
    assert by_feature[Decimal(10_000)].active_from == boundary  # pro from it


async def test_cancel_now_ends_the_plan_entitlements(tenant, db):
    acme = await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro")
    canceled = await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "now"}))
    assert canceled["status"] == "canceled" and canceled["ends_at"] is not None
    assert await open_rows(db, tenant.id, acme["id"]) == []
    assert all(r.active_to is not None for r in await rows(db, tenant.id, acme["id"]))


async def test_cancel_at_period_end_keeps_entitlements_until_then(tenant, db):
    acme = await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro", time_zone="Asia/Kathmandu")
    canceled = await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "period_end"}))
    ends_at = datetime.fromisoformat(canceled["ends_at"])
    assert canceled["status"] == "active" and ends_at > datetime.now(UTC) + timedelta(days=27)
    assert {r.active_to for r in await rows(db, tenant.id, acme["id"])} == {ends_at}


async def test_cancel_twice_is_409(tenant):
    await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro")
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}))
    assert (await tenant.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={})).status_code == 409


async def test_migrate_changes_only_what_the_new_version_changes(tenant, db):
    """Features with the same values in v2 keep their row; changed ones are replaced now."""
    acme = await _catalogue(tenant.client)
    sub = await subscribe(tenant.client, "acme", "pro")
    before = {r.kind: r.id for r in await open_rows(db, tenant.id, acme["id"])}
    await plan(tenant.client, "pro", [metered("api-calls", 20_000), boolean("sso")])
    await ok(await tenant.client.post(f"/v1/subscriptions/{sub['id']}/migrate"))
    after = {r.kind: r for r in await open_rows(db, tenant.id, acme["id"])}
    assert set(after) == {"metered", "boolean"}
    assert after["boolean"].id == before["boolean"]
    assert after["metered"].id != before["metered"] and after["metered"].included == 20_000


async def test_usage_reported_before_a_scheduled_plan_change_counts_on_the_plan_in_force(tenant, db):
    """Weekly pool entries billed monthly: a change at period end falls mid-week, and swims
    reported before it count against the old plan's weekly limit until then."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json={"key": "swims", "event_type": "swim", "aggregation": "COUNT"}), 201)
    await feature(c, "pool", meter="swims")
    weekly = {"feature": "pool", "kind": "metered", "usage_period": "WEEK"}
    await plan(c, "basic", [{**weekly, "included": 2, "hard_limit": 2}])
    await plan(c, "plus", [{**weekly, "included": 3, "hard_limit": 3}])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme"]}), 201)
    monday = datetime(2026, 1, 5, tzinfo=UTC)  # billing months start on the 5th, weeks on Mondays
    async with db.transaction() as s:
        sub = await subscriptions.create(s, tenant.id, SubscriptionCreate(customer="acme", plan="basic",
                                                                          starts_at=monday), actor="t", at=monday)
    async with db.transaction() as s:
        new = await subscriptions.change_plan(s, tenant.id, sub.subscription.id, "plus", when="period_end",
                                              actor="t", at=datetime(2026, 2, 3, tzinfo=UTC))
    assert new.subscription.starts_at == datetime(2026, 2, 5, tzinfo=UTC)  # a Thursday
    swims = [{"specversion": "1.0", "id": f"s{i}", "source": "gate", "type": "swim", "subject": "acme",
              "time": f"2026-02-03T1{i}:00:00Z"} for i in range(2)]
    await ok(await c.post("/v1/events", json=swims))
    async with db.transaction() as s:
        wednesday = await checks.check(s, tenant.id, checks.CheckRequest("acme", "pool"), at=datetime(2026, 2, 4, tzinfo=UTC))
    assert (wednesday.decision.usage, wednesday.decision.reason) == (2, "hard_limit")
