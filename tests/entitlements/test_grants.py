"""Grants: top-ups raise the cap, burn order, expiry, void, rollover, overage at reset."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from allotment.db import Database
from allotment.entitlements import check as checks
from allotment.entitlements import grants, overrides, reservations, state
from allotment.entitlements.engine import burn, has_ended, raised_by, rollover
from allotment.entitlements.schemas import AdhocIn, OverrideIn
from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


async def _http_customer(c: Any, included: int, soft: int | None, hard: int | None) -> None:
    await feature(c, "tokens")
    await plan(c, "starter", [metered("tokens", included, soft, hard)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")


async def _http_check(c: Any, **body: Any) -> Any:
    return await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "tokens", **body}))


async def _post_grant(c: Any, status: int = 201, **body: Any) -> Any:
    return await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json=body), status)


class Clockwork:
    """A customer entitled to `data` from T0, driven through the services at chosen instants."""

    def __init__(self, db: Database, tenant_id: str, feature_key: str = "data") -> None:
        self.db, self.tenant_id, self.feature = db, tenant_id, feature_key

    async def entitle(self, c: Any, **values: Any) -> None:
        await feature(c, self.feature)
        async with self.db.transaction() as s:
            data = AdhocIn(feature=self.feature, kind="metered", **{"usage_period": "MONTH", **values})
            await overrides.create_adhoc(s, self.tenant_id, "acme", data, actor="test", at=T0)

    async def grant(self, at: datetime, **options: Any) -> str:
        async with self.db.transaction() as s:
            record = await grants.create(s, self.tenant_id, customer="acme", feature=self.feature, at=at, **options)
            return record.id

    async def consume(self, quantity: float | str, at: datetime) -> checks.CheckResult:
        async with self.db.transaction() as s:
            request = checks.CheckRequest("acme", self.feature, D(str(quantity)), consume=True)
            return await checks.check(s, self.tenant_id, request, at=at)

    async def check(self, quantity: float | str, at: datetime) -> checks.CheckResult:
        async with self.db.transaction() as s:
            request = checks.CheckRequest("acme", self.feature, D(str(quantity)))
            return await checks.check(s, self.tenant_id, request, at=at)

    async def state(self, at: datetime) -> state.EntitlementState:
        async with self.db.transaction(readonly=True) as s:
            return await state.get_state(s, self.tenant_id, "acme", self.feature, at=at)

    async def amounts(self, at: datetime) -> dict[str, Decimal]:
        async with self.db.transaction(readonly=True) as s:
            found = await grants.of_period(s, self.tenant_id, customer="acme", feature=self.feature, at=at)
            return {g.id: g.amount for g in found}


async def _clockwork(tenant: Any, db: Database, **values: Any) -> Clockwork:
    await customer(tenant.client, "acme")
    clock = Clockwork(db, tenant.id)
    await clock.entitle(tenant.client, **values)
    return clock


# --- top-ups raise the cap -------------------------------------------------------------------


async def test_top_up_raises_the_cap_and_consume_stops_exactly_at_hard_plus_grant(tenant):
    c = tenant.client
    await _http_customer(c, 10, None, 10)
    assert (await _http_check(c, quantity=10, consume=True))["decision"] == "allow"
    assert (await _http_check(c, consume=True))["reason"] == "hard_limit"
    created = await _post_grant(c, amount=5)
    assert (created["amount"], created["balance"], created["id"][:4]) == (5, 5, "grt_")
    assert (await _http_check(c, quantity=4, consume=True))["decision"] == "allow"
    last = await _http_check(c, consume=True)
    assert (last["decision"], last["usage"], last["hard_limit"], last["balance"]) == ("allow", 15, 15, 0)
    denied = await _http_check(c, consume=True)
    assert (denied["decision"], denied["reason"], denied["usage"]) == ("deny", "hard_limit", 15)
    assert (await ok(await c.get(f"/v1/grants/{created['id']}")))["balance"] == 0


async def test_check_balance_and_state_show_what_grants_add(tenant):
    c = tenant.client
    await _http_customer(c, 10, 12, 20)
    await _post_grant(c, amount=5, priority=2)
    first = await _post_grant(c, amount=3, priority=1)
    body = await _http_check(c, quantity=11, consume=True)
    assert (body["decision"], body["soft_limit"], body["hard_limit"], body["balance"]) == ("allow", 20, 28, 9)
    got = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert (got["balance"], got["soft_limit"], got["hard_limit"]) == (9, 20, 28)
    assert next((g["id"], g["amount"], g["balance"]) for g in got["grants"]) == (first["id"], 3, 2)
    assert [g["balance"] for g in got["grants"]] == [2, 5]
    listed = await ok(await c.get("/v1/customers/acme/entitlements"))
    assert listed["items"][0]["grants"] == got["grants"]


async def test_concurrent_consumes_stop_exactly_at_hard_plus_grants(tenant):
    """24 concurrent consumes against hard 4 + a grant of 4: exactly 8 are allowed."""
    c = tenant.client
    await _http_customer(c, 4, None, 4)
    await _post_grant(c, amount=4)
    body = {"customer": "acme", "feature": "tokens", "consume": True}
    answers = await asyncio.gather(*(c.post("/v1/check", json=body) for _ in range(24)))
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["decision"] != "deny" for a in answers) == 8
    assert (await _http_check(c))["usage"] == 8


async def test_reservations_hold_against_the_raised_hard_limit(tenant):
    c = tenant.client
    await _http_customer(c, 0, None, 0)
    await _post_grant(c, amount=30)
    body = {"customer": "acme", "feature": "tokens", "ttl_seconds": 60}
    held = await ok(await c.post("/v1/reservations", json={**body, "quantity": 30}), 201)
    assert (held["decision"], held["hard_limit"], held["balance"]) == ("allow", 30, 0)
    refused = await ok(await c.post("/v1/reservations", json={**body, "quantity": 0.5}))
    assert (refused["decision"], refused["reason"]) == ("deny", "hard_limit")
    settled = await ok(await c.post(f"/v1/reservations/{held['reservation']['id']}/commit", json={"quantity": 22.4}))
    assert (settled["usage"], settled["reserved"]) == (22.4, 0)
    assert (await _http_check(c))["balance"] == 7.6


# --- burn order, expiry, void -----------------------------------------------------------------


async def test_story_4_add_on_expiring_first_burns_first_and_the_monthly_bundle_rolls_over_up_to_2(tenant, db):
    """Monthly 10 GB bundles (unused rolls over up to 2 GB) plus an add-on expiring first; 0 GB is deny."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    feb, mar, apr = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    january = await clock.grant(T0, amount=D(10), priority=5, expires_at=mar, max_rollover=D(2))
    addon = await clock.grant(day(9), amount=D(1), priority=5, expires_at=day(40))
    await clock.consume("1.5", day(10))
    now = await clock.state(day(10))
    assert [(g.grant.id, g.balance) for g in now.grants] == [(addon, 0), (january, D("9.5"))]
    await clock.consume("2.5", day(20))  # January's bundle paid 3 of its 10: 7 left, 2 roll over
    february = await clock.grant(feb, amount=D(10), priority=5, expires_at=apr, max_rollover=D(2))
    assert await clock.amounts(feb) == {january: 2, addon: D("0"), february: 10}
    # The add-on is spent; what expires first burns first: January's 2, then February's bundle.
    await clock.consume(3, day(35))
    after = await clock.state(day(35))
    assert [(g.grant.id, g.balance) for g in after.grants] == [(addon, 0), (january, 0), (february, 9)]
    assert (await clock.consume(9, day(36))).decision.decision == "allow"
    denied = await clock.consume("0.001", day(37))
    assert (denied.decision.decision, denied.decision.balance) == ("deny", 0)
    assert await clock.amounts(mar) == {february: 0}


async def test_a_grant_expiring_mid_period_stops_counting_exactly_at_its_expiry(tenant, db):
    """The add-on expires before the period's included units, so it burns first: of its 5,
    the 3 units used are paid by it; the 2 it still held are gone at its expiry."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, usage_anchor=T0.isoformat())
    expiry = day(10) + timedelta(hours=7, microseconds=5)
    await clock.grant(day(1), amount=D(5), expires_at=expiry)
    await clock.consume(3, day(2))
    just_before = await clock.check(12, expiry - timedelta(microseconds=1))
    assert (just_before.decision.decision, just_before.decision.hard_limit) == ("allow", 15)
    at_expiry = await clock.check(10, expiry)
    assert (at_expiry.decision.decision, at_expiry.decision.hard_limit) == ("allow", 13)
    assert (await clock.check("10.001", expiry)).decision.decision == "deny"


async def test_an_add_on_bundle_burns_before_the_monthly_bundle_because_it_expires_first(tenant, db):
    """Prepaid bundles: 10 GB a month included, a 1 GB add-on expiring mid-month. Usage before
    its expiry spends the add-on first, so the customer keeps all of it; an add-on that
    outlasts the month burns after the monthly bundle."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, usage_anchor=T0.isoformat())
    short = await clock.grant(day(1), amount=D(1), expires_at=day(15))
    long = await clock.grant(day(1), amount=D(2), expires_at=day(80))
    await clock.consume(3, day(5))
    mid = await clock.state(day(5))
    assert [(g.grant.id, g.balance) for g in mid.grants] == [(short, 0), (long, 2)]
    assert (mid.balance, mid.hard_limit) == (10, 13)
    later = await clock.state(day(20))  # the add-on expired fully spent: its 1 GB stays paid
    assert (later.usage, later.balance, later.hard_limit) == (3, 10, 13)
    assert (await clock.consume(8, day(21))).decision.decision == "allow"  # the monthly bundle's last 8
    assert [(g.grant.id, g.balance) for g in (await clock.state(day(21))).grants] == [(short, 0), (long, 2)]
    assert (await clock.consume(2, day(22))).decision.decision == "allow"
    assert (await clock.consume("0.001", day(22))).decision.decision == "deny"
    assert await clock.amounts(datetime(2026, 2, 1, tzinfo=UTC)) == {long: 0}


async def test_an_add_on_bought_late_in_the_period_pays_only_for_usage_after_it(tenant, db):
    """9 of 10 GB used, then a 3 GB add-on expiring first: it holds all 3, burns before the
    bundle from then on, and expiring unused leaves the customer the bundle's last 1."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, usage_anchor=T0.isoformat())
    await clock.consume(9, day(2))
    add_on = await clock.grant(day(5), amount=D(3), expires_at=day(12))
    bought = await clock.state(day(5))
    assert ([(g.grant.id, g.balance) for g in bought.grants], bought.balance) == ([(add_on, 3)], 4)
    expired = await clock.state(day(15))
    assert (expired.usage, expired.balance, expired.hard_limit) == (9, 1, 10)
    assert (await clock.consume(2, day(16))).decision.decision == "deny"
    assert (await clock.consume(1, day(16))).decision.decision == "allow"


async def test_an_add_on_bought_late_burns_first_for_usage_after_it_and_keeps_what_it_paid(tenant, db):
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, usage_anchor=T0.isoformat())
    await clock.consume(9, day(2))
    add_on = await clock.grant(day(5), amount=D(3), expires_at=day(12))
    await clock.consume(1, day(6))
    assert [(g.grant.id, g.balance) for g in (await clock.state(day(6))).grants] == [(add_on, 2)]
    expired = await clock.state(day(15))  # it paid 1 GB before it expired: the bundle's 1 is left
    assert (expired.usage, expired.balance, expired.hard_limit) == (10, 1, 11)


async def test_overage_owed_before_a_top_up_is_paid_from_it(tenant, db):
    clock = await _clockwork(tenant, db, included=5, usage_anchor=T0.isoformat())
    await clock.consume(8, day(2))
    top_up = await clock.grant(day(5), amount=D(10))
    now = await clock.state(day(5))
    assert ([(g.grant.id, g.balance) for g in now.grants], now.balance, now.overage) == ([(top_up, 7)], 7, 0)


async def test_a_grant_bought_late_in_a_past_period_carried_only_what_usage_after_it_left(tenant, db):
    """Replaying January: of its 10 GB, 9 were used before a priority-0 add-on was bought, so
    the add-on paid only the 1 used after it and carries 2 into February."""
    clock = await _clockwork(tenant, db, included=10, usage_anchor=T0.isoformat())
    await clock.consume(9, day(3))
    add_on = await clock.grant(day(20), amount=D(3), priority=0, expires_at=day(50))
    await clock.consume(1, day(25))
    assert await clock.amounts(datetime(2026, 2, 1, tzinfo=UTC)) == {add_on: 2}


async def test_a_plan_change_or_override_mid_period_leaves_grants_what_they_held(tenant):
    """The period is judged as one with the new values: the 20 used burned the priority-0
    grant once, before the change, and not again after it or after an override."""
    c = tenant.client
    await feature(c, "credits")
    await plan(c, "c100", [metered("credits", 100, 100, 100)])
    await plan(c, "c200", [metered("credits", 200, 200, 200)])
    await customer(c, "acme")
    sub = await subscribe(c, "acme", "c100")
    grant = await ok(await c.post("/v1/customers/acme/entitlements/credits/grants", json={"amount": 30, "priority": 0}), 201)
    await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "credits", "quantity": 20, "consume": True}))

    async def seen() -> tuple[Any, ...]:
        state = await ok(await c.get("/v1/customers/acme/entitlements/credits"))
        held = (await ok(await c.get(f"/v1/grants/{grant['id']}")))["balance"]
        return state["usage"], state["soft_limit"], state["balance"], held

    assert await seen() == (20, 130, 110, 10)
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "c200"}))
    assert await seen() == (20, 230, 210, 10)
    await ok(await c.put("/v1/customers/acme/entitlements/credits/override", json={"soft_limit": 300, "hard_limit": 300}))
    assert await seen() == (20, 330, 310, 10)
    assert (await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "credits", "quantity": 311})))[
        "decision"] == "deny"


async def test_usage_a_grant_paid_for_before_it_expired_stays_paid(tenant, db):
    """A 4-unit add-on (burns first) pays for 3 units, then expires mid-period: those 3 stay
    paid by it, so the monthly bundle still holds all its 10; usage after the expiry burns the
    bundle only."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    monthly = await clock.grant(T0, amount=D(10), priority=5)
    addon = await clock.grant(day(1), amount=D(4), priority=1, expires_at=day(10))
    await clock.consume(3, day(5))
    after = await clock.check(10, day(11))
    assert (after.decision.decision, after.decision.balance, after.decision.hard_limit) == ("allow", 10, 13)
    assert (await clock.check("10.001", day(11))).decision.decision == "deny"
    await clock.consume(2, day(12))  # the first usage after the expiry
    later = await clock.check(1, day(13))
    assert (later.decision.usage, later.decision.balance, later.decision.hard_limit) == (5, 8, 13)
    now = await clock.state(day(13))
    assert [(g.grant.id, g.balance) for g in now.grants] == [(addon, 0), (monthly, 8)]
    assert (await clock.consume(8, day(14))).decision.decision == "allow"
    assert (await clock.consume("0.001", day(14))).decision.decision == "deny"


async def test_usage_a_voided_grant_paid_for_stays_paid(tenant):
    c = tenant.client
    await _http_customer(c, 10, None, 10)
    created = await _post_grant(c, amount=5)
    assert (await _http_check(c, quantity=12, consume=True))["decision"] == "allow"
    await ok(await c.post(f"/v1/grants/{created['id']}/void", json={"reason": "refunded"}))
    body = await _http_check(c)  # the 2 units the grant paid for stay paid; its other 3 are gone
    assert (body["decision"], body["usage"], body["hard_limit"], body["balance"]) == ("deny", 12, 12, 0)
    assert (await _http_check(c, quantity=1, consume=True))["decision"] == "deny"


async def test_void_stops_the_grant_at_once_is_audited_and_twice_is_409(tenant):
    c = tenant.client
    await _http_customer(c, 10, None, 10)
    created = await _post_grant(c, amount=5)
    assert (await _http_check(c, quantity=15))["decision"] == "allow"
    voided = await ok(await c.post(f"/v1/grants/{created['id']}/void", json={"reason": "refunded"}))
    assert (voided["void_reason"], voided["balance"]) == ("refunded", 0) and voided["voided_at"]
    assert (await _http_check(c, quantity=15))["decision"] == "deny"
    again = await c.post(f"/v1/grants/{created['id']}/void", json={"reason": "again"})
    assert (again.status_code, again.json()["type"]) == (409, "grant_voided")
    log = await ok(await c.get("/v1/audit-log", params={"entity_type": "grant"}))
    assert [e["action"] for e in log["items"]] == ["grant.created", "grant.voided"]
    listed = await ok(await c.get("/v1/customers/acme/entitlements/tokens/grants"))
    assert [g["id"] for g in listed["items"]] == [created["id"]] and listed["next_cursor"] is None


# --- rollover ---------------------------------------------------------------------------------


async def test_rollover_across_a_dst_change_in_berlin_clamps_to_min_and_max(tenant, db):
    """Daily periods in Berlin over the spring-forward night: remainders clamp at local midnight."""
    anchor = datetime(2026, 3, 1, tzinfo=BERLIN)
    clock = await _clockwork(tenant, db, usage_period="DAY", included=0, hard_limit=0,
                             usage_anchor=anchor.isoformat(), time_zone="Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN).astimezone(UTC)  # 02:00 jumps to 03:00 this day
    midnight = datetime(2026, 3, 30, 0, 0, tzinfo=BERLIN).astimezone(UTC)
    assert midnight - start == timedelta(hours=23)
    capped = await clock.grant(start, amount=D(10), priority=1, max_rollover=D(3))
    floored = await clock.grant(start, amount=D(4), priority=2, min_rollover=D(2))
    await clock.consume(12, start + timedelta(hours=5))  # capped: 0 left, floored: 2 left
    await clock.consume(1, midnight - timedelta(microseconds=1))  # floored: 1 left
    last = midnight - timedelta(microseconds=1)
    assert await clock.amounts(last) == {capped: 10, floored: 4}
    assert await clock.amounts(midnight) == {capped: 0, floored: 2}
    await clock.consume(2, midnight + timedelta(hours=1))
    assert await clock.amounts(midnight + timedelta(days=1)) == {capped: 0, floored: 2}
    unused = await clock.grant(midnight + timedelta(days=1), amount=D(7), max_rollover=D(3))
    assert (await clock.amounts(midnight + timedelta(days=2)))[unused] == 3


async def test_computing_two_periods_in_two_runs_equals_one_run(tenant, db):
    """The service's amounts after two periods equal the engine run period by period."""
    clock = await _clockwork(tenant, db, included=3, usage_anchor=T0.isoformat())
    a = await clock.grant(T0, amount=D(10), priority=1, max_rollover=D(6))
    b = await clock.grant(day(5), amount=D(4), priority=1, expires_at=day(70), min_rollover=D(1))
    feb, mar = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    for quantity, at in ((2, day(3)), (5, day(12)), ("1.5", day(40)), (6, day(50))):
        await clock.consume(quantity, at)
    async with db.transaction(readonly=True) as s:
        records = await grants.of_period(s, tenant.id, customer="acme", feature="data", at=day(5))
    first = burn(records, D(3), D(7), feb - timedelta(microseconds=1), included_until=feb).grants
    in_feb = rollover(records, first, at=feb)
    assert await clock.amounts(feb) == in_feb
    feb_grants = [replace(g, amount=in_feb[g.id]) for g in records]
    second = burn(feb_grants, D(3), D("7.5"), mar - timedelta(microseconds=1), included_until=mar).grants
    assert await clock.amounts(mar) == rollover(feb_grants, second, at=mar)
    assert await clock.amounts(mar) == {a: D("2.5"), b: 1}


async def test_idle_periods_between_usage_leave_the_amounts_of_a_period_by_period_run(tenant, db):
    """Daily periods over months with usage on a few days only, a grant starting and one
    expiring in the idle stretches: the service equals the engine run day by day, and a day
    thousands of years later holds what the last reset left."""
    clock = await _clockwork(tenant, db, usage_period="DAY", included=1, usage_anchor=T0.isoformat())
    capped = await clock.grant(T0, amount=D(10), priority=1, max_rollover=D(6), min_rollover=D(2))
    later = await clock.grant(day(40), amount=D(5), priority=2, expires_at=day(90) + timedelta(hours=5),
                              max_rollover=D(4))
    used = {3: D(5), 4: D("0.5"), 41: D(4), 120: D(3)}
    for n, quantity in used.items():
        await clock.consume(str(quantity), day(n) + timedelta(hours=1))
    async with db.transaction(readonly=True) as s:
        records = await grants.of_period(s, tenant.id, customer="acme", feature="data", at=day(40))
    amounts = {g.id: g.amount for g in records}
    for n in range(150):
        live = [replace(g, amount=amounts[g.id]) for g in records]
        left = burn(live, D(1), used.get(n, D(0)), day(n + 1) - timedelta(microseconds=1),
                    included_until=day(n + 1)).grants
        amounts = rollover(live, left, at=day(n + 1))
        if n + 1 in (5, 41, 42, 91, 120, 150):
            at = day(n + 1) + timedelta(hours=2)
            expected = {g.id: amounts[g.id] for g in records if g.effective_at <= at and not has_ended(g, at)}
            assert await clock.amounts(at) == expected, n + 1
    assert amounts == {capped: 2, later: 0}
    assert await clock.amounts(datetime(8999, 6, 1, tzinfo=UTC)) == {capped: 2}


# --- included units that roll over ----------------------------------------------------------


def month(n: int) -> datetime:
    """The first instant of the n-th month after January 2026."""
    return datetime(2026 + n // 12, n % 12 + 1, 1, tzinfo=UTC)


async def test_unused_monthly_data_rolls_over_up_to_two_gb(tenant, db):
    """Story 4: a 10 GB monthly bundle whose unused part rolls over up to 2 GB; an add-on that
    expires first burns first; at zero, data is denied."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, included_rollover=2,
                             usage_anchor=T0.isoformat())
    await clock.consume(7, day(3))  # 3 unused in January: 2 roll over
    feb = await clock.state(month(1))
    assert (feb.rolled_over, feb.hard_limit, feb.balance, feb.grants) == (2, 12, 12, ())
    assert (await clock.check(12, month(1))).decision.decision == "allow"
    assert (await clock.consume(12, month(1) + timedelta(days=2))).decision.decision == "allow"
    assert (await clock.consume("0.001", month(1) + timedelta(days=3))).decision.reason == "hard_limit"
    mar = await clock.state(month(2))  # February used everything: nothing rolls
    assert (mar.rolled_over, mar.hard_limit) == (0, 10)
    apr = await clock.state(month(3))  # March was idle: 10 unused, 2 roll
    assert (apr.rolled_over, apr.hard_limit) == (2, 12)
    addon = await clock.grant(month(3), amount=D(1), expires_at=month(3) + timedelta(days=10))
    await clock.consume(1, month(3) + timedelta(days=1))  # the add-on pays: it expires first
    later = await clock.state(month(3) + timedelta(days=20))
    assert (later.usage, later.balance, later.hard_limit) == (1, 12, 13)
    assert [(g.grant.id, g.balance) for g in later.grants] == [(addon, 0)]
    far = await clock.state(month(40))
    assert (far.rolled_over, far.hard_limit, far.usage) == (2, 12, 0)


async def test_a_roll_over_bound_above_the_included_units_fills_up_over_idle_periods(tenant, db):
    """Unused minutes bank up to 25 with 10 included a month: idle months add 10 each until
    the bound; a month that spends into the bank leaves what is unused of both."""
    clock = await _clockwork(tenant, db, included=10, hard_limit=10, included_rollover=25,
                             usage_anchor=T0.isoformat())
    assert [(await clock.state(month(n))).rolled_over for n in range(5)] == [0, 10, 20, 25, 25]
    await clock.consume(30, month(5) + timedelta(days=1))  # of 35: 5 left, all roll on
    assert [(await clock.state(month(n))).rolled_over for n in (6, 7, 8, 30)] == [5, 15, 25, 25]
    assert (await clock.check("35.001", month(30))).decision.decision == "deny"


async def test_rolled_over_units_are_enforced_on_every_path_of_a_check(tenant, db):
    """The row began in January; now, months later, checks and consumes over HTTP (which take
    the one-read way when they can) see what rolled in."""
    await _clockwork(tenant, db, included=10, hard_limit=10, included_rollover=2, usage_anchor=T0.isoformat())
    body = {"customer": "acme", "feature": "data", "quantity": 12}
    answer = await ok(await tenant.client.post("/v1/check", json=body))
    assert (answer["decision"], answer["hard_limit"]) == ("allow", 12)
    assert (await ok(await tenant.client.post("/v1/check", json={**body, "consume": True})))["decision"] == "allow"
    last = await ok(await tenant.client.post("/v1/check", json={**body, "quantity": "0.001", "consume": True}))
    assert (last["decision"], last["reason"]) == ("deny", "hard_limit")
    page = await ok(await tenant.client.get("/v1/customers/acme/entitlements/data"))
    assert (page["rolled_over"], page["included"], page["balance"], page["grants"]) == (2, 10, 0, [])


async def test_an_override_or_its_removal_keeps_what_rolled_over(tenant, db):
    """Raising the cap mid-month, and going back to the plan, keep the month's usage and the
    units rolled into it; the next month rolls on from all of it."""
    c = tenant.client
    await feature(c, "data")
    await plan(c, "bundle", [{**metered("data", 10, None, 10), "included_rollover": 2}])
    await customer(c, "acme")
    await subscribe(c, "acme", "bundle", starts_at=T0.isoformat())
    clock = Clockwork(db, tenant.id)
    await clock.consume(9, day(4))
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    assert ((s := await clock.state(feb)).rolled_over, s.hard_limit) == (1, 11)
    async with db.transaction() as session:
        await overrides.set_override(session, tenant.id, "acme", "data", OverrideIn(hard_limit=D(20)),
                                     actor="test", at=feb + timedelta(days=9))
    await clock.consume(5, feb + timedelta(days=11))
    assert ((s := await clock.state(feb + timedelta(days=12))).rolled_over, s.hard_limit, s.usage) == (1, 21, 5)
    async with db.transaction() as session:
        await overrides.remove_override(session, tenant.id, "acme", "data", actor="test", at=feb + timedelta(days=19))
    assert ((s := await clock.state(feb + timedelta(days=20))).rolled_over, s.hard_limit, s.usage) == (1, 11, 5)
    assert (await clock.check(6, feb + timedelta(days=21))).decision.decision == "allow"
    assert (await clock.check("6.001", feb + timedelta(days=21))).decision.decision == "deny"
    assert (await clock.state(datetime(2026, 3, 2, tzinfo=UTC))).rolled_over == 2


async def test_included_rollover_is_a_value_of_plans_and_needs_a_resetting_period(tenant):
    c = tenant.client
    await feature(c, "minutes")
    made = await plan(c, "bundle", [{**metered("minutes", 300), "included_rollover": 100}])
    assert made["entitlements"][0]["included_rollover"] == 100
    never = {**metered("minutes", 300), "usage_period": "NONE", "included_rollover": 100}
    refused = await c.post("/v1/plans", json={"key": "forever", "name": "Forever", "entitlements": [never]})
    assert refused.status_code == 422, refused.text
    assert "entitlements[0].included_rollover" in refused.text
    boolean_rollover = {**boolean("minutes"), "included_rollover": 5}
    refused = await c.post("/v1/plans", json={"key": "odd", "name": "Odd", "entitlements": [boolean_rollover]})
    assert refused.status_code == 422 and "included_rollover" in refused.text


# --- overage at reset -------------------------------------------------------------------------


async def test_overage_is_carried_into_the_next_period_or_forgiven(tenant, db):
    await customer(tenant.client, "acme")
    carried, forgiven = Clockwork(db, tenant.id, "data"), Clockwork(db, tenant.id, "calls")
    for clock, policy in ((carried, "carry"), (forgiven, "forgive")):
        await clock.entitle(tenant.client, included=10, hard_limit=30, overage_at_reset=policy,
                            usage_anchor=T0.isoformat())
        await clock.grant(day(1), amount=D(3), expires_at=day(40))  # soft 13 in January
        await clock.consume(18, day(2))  # 5 over the soft limit after the grant
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    assert (await carried.state(feb)).usage == 5  # read-only: reported, not yet written
    assert (await forgiven.state(feb)).usage == 0
    assert (await carried.check(1, feb)).decision.usage == 5
    assert (await carried.consume(1, feb + timedelta(days=1))).decision.usage == 6  # carried once
    assert (await forgiven.consume(1, feb + timedelta(days=1))).decision.usage == 1
    assert (await carried.state(datetime(2026, 3, 1, tzinfo=UTC))).usage == 0  # 6 < soft 10 (the grant expired)


async def test_overage_carried_into_a_period_survives_a_change_before_anyone_looked(tenant, db):
    """13 used of 10 on day one, 3 carried into day two; the values change on day two before
    any check fixed the carry: the new row starts with the 3."""
    clock = await _clockwork(tenant, db, included=10, usage_period="DAY", overage_at_reset="carry",
                             usage_anchor=T0.isoformat())
    await clock.consume(13, day(0.5))
    async with db.transaction() as s:
        await overrides.remove_adhoc(s, tenant.id, "acme", "data", actor="test", at=day(1.5))
        data = AdhocIn(feature="data", kind="metered", usage_period="DAY", included=12, overage_at_reset="carry",
                       usage_anchor=T0)
        await overrides.create_adhoc(s, tenant.id, "acme", data, actor="test", at=day(1.5))
    seen = await clock.check(1, day(1.6))
    assert (seen.decision.usage, seen.decision.balance) == (3, 9)


async def test_overage_is_carried_once_under_concurrent_first_consumes(tenant, db):
    clock = await _clockwork(tenant, db, included=10, overage_at_reset="carry", usage_anchor=T0.isoformat())
    await clock.consume(14, day(3))
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    answers = await asyncio.gather(*(clock.consume(1, feb + timedelta(seconds=i)) for i in range(8)))
    assert all(a.decision.decision != "deny" for a in answers)
    assert (await clock.state(feb + timedelta(days=1))).usage == 4 + 8


async def test_overage_carries_through_an_idle_period(tenant, db):
    """Nobody used February: its usage was January's overage, and what exceeds it carries on."""
    clock = await _clockwork(tenant, db, included=10, overage_at_reset="carry", usage_anchor=T0.isoformat())
    await clock.consume(35, day(3))
    assert (await clock.state(datetime(2026, 3, 2, tzinfo=UTC))).usage == 15
    assert (await clock.consume(1, datetime(2026, 3, 2, tzinfo=UTC))).decision.usage == 16


async def test_overage_carried_day_after_day_then_idle_equals_a_day_by_day_run(tenant, db):
    """A carry drains over idle days (burning a grant on the way); once it is gone, idle days
    change nothing, however many: amounts and usage equal the engine run day by day."""
    clock = await _clockwork(tenant, db, usage_period="DAY", included=2, overage_at_reset="carry",
                             usage_anchor=T0.isoformat())
    grant = await clock.grant(T0, amount=D(3), priority=1, max_rollover=D(2))
    used = {3: D(20), 40: D(1)}
    for n, quantity in used.items():
        await clock.consume(str(quantity), day(n) + timedelta(hours=1))
    async with db.transaction(readonly=True) as s:
        records = await grants.of_period(s, tenant.id, customer="acme", feature="data", at=day(1))
    amounts, carry = {g.id: g.amount for g in records}, D(0)
    for n in range(60):
        live = [replace(g, amount=amounts[g.id]) for g in records]
        usage = used.get(n, D(0)) + carry
        if n in (5, 9, 20, 41, 59):
            at = day(n) + timedelta(hours=2)
            assert (await clock.amounts(at), (await clock.state(at)).usage) == (amounts, usage), n
        last = day(n + 1) - timedelta(microseconds=1)
        left = burn(live, D(2), usage, last, included_until=day(n + 1)).grants
        carry = max(D(0), usage - 2 - raised_by(live, last))
        amounts = rollover(live, left, at=day(n + 1))
    assert carry == 0 and amounts == {grant: 0}
    far = datetime(8999, 6, 1, tzinfo=UTC)
    assert (await clock.amounts(far), (await clock.state(far)).usage) == ({grant: 0}, 0)


async def test_a_hold_taken_before_a_change_of_values_commits_on_its_row_with_older_grants(tenant, db):
    """The reservation's row ended mid-period (its values were replaced by another row): the
    commit still replays January's grant up to the row's end and settles in the held period."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=10, usage_anchor=T0.isoformat())
    await clock.grant(T0, amount=D(5), priority=1)
    await clock.consume(2, day(3))
    async with db.transaction() as s:
        request = reservations.ReservationRequest("acme", "data", D(6), ttl_seconds=30 * 86_400)
        held = await reservations.create(s, tenant.id, request, at=day(35))
    assert held.reservation is not None
    async with db.transaction() as s:
        await overrides.remove_adhoc(s, tenant.id, "acme", "data", actor="test", at=day(36))
        data = AdhocIn(feature="data", kind="metered", usage_period="MONTH", included=0, hard_limit=20, usage_anchor=T0)
        await overrides.create_adhoc(s, tenant.id, "acme", data, actor="test", at=day(36))
    async with db.transaction() as s:
        settled = await reservations.commit(s, tenant.id, held.reservation.id, D(4), at=day(37))
    assert (settled.reservation.status, settled.usage, settled.reserved) == ("committed", 4, 0)


# --- bad input, idempotency, isolation --------------------------------------------------------


async def test_idempotent_create_retry_grants_once(tenant):
    c = tenant.client
    await _http_customer(c, 10, None, 10)
    headers = {"Idempotency-Key": "topup-1"}
    url = "/v1/customers/acme/entitlements/tokens/grants"
    first = await c.post(url, json={"amount": 5}, headers=headers)
    retry = await c.post(url, json={"amount": 5}, headers=headers)
    assert (first.status_code, retry.status_code, retry.headers["Idempotent-Replayed"]) == (201, 201, "true")
    assert retry.json()["id"] == first.json()["id"]
    assert (await c.post(url, json={"amount": 6}, headers=headers)).status_code == 409
    assert len((await ok(await c.get(url)))["items"]) == 1
    assert (await _http_check(c))["hard_limit"] == 15


async def test_bad_grants_are_refused_naming_the_field(tenant):
    c = tenant.client
    await _http_customer(c, 10, None, 10)
    await feature(c, "sso")
    await ok(await c.post("/v1/customers/acme/entitlements", json=boolean("sso")), 201)
    url = "/v1/customers/acme/entitlements/{}/grants"
    cases = [
        ({"amount": -1}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 1, "effective_at": "2026-02-01T00:00:00Z", "expires_at": "2026-01-01T00:00:00Z"}, "expires_at"),
        ({"amount": 1, "min_rollover": 3, "max_rollover": 2}, "max_rollover"),
    ]
    for body, field in cases:
        resp = await c.post(url.format("tokens"), json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert [e["field"] for e in resp.json()["errors"]] == [field], resp.json()
    resp = await c.post(url.format("sso"), json={"amount": 1})
    assert (resp.status_code, [e["field"] for e in resp.json()["errors"]]) == (422, ["feature"])
    resp = await c.post("/v1/customers/nobody/entitlements/tokens/grants", json={"amount": 1})
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found") and "nobody" in resp.text
    resp = await c.post(url.format("nothing"), json={"amount": 1})
    assert (resp.status_code, resp.json()["type"]) == (404, "feature_not_found") and "nothing" in resp.text
    assert (await c.post("/v1/grants/grt_nope/void", json={"reason": ""})).status_code == 422
    assert (await ok(await c.get("/v1/customers/acme/entitlements/tokens/grants")))["items"] == []


async def test_other_tenants_cannot_see_or_void_a_grant(tenant, other_tenant):
    await _http_customer(tenant.client, 10, None, 10)
    created = await _post_grant(tenant.client, amount=5)
    assert (await other_tenant.client.get(f"/v1/grants/{created['id']}")).status_code == 404
    resp = await other_tenant.client.post(f"/v1/grants/{created['id']}/void", json={"reason": "x"})
    assert resp.status_code == 404
    await customer(other_tenant.client, "acme")
    await feature(other_tenant.client, "tokens")
    resp = await other_tenant.client.get("/v1/customers/acme/entitlements/tokens/grants")
    assert resp.json()["items"] == []
    assert (await ok(await tenant.client.get(f"/v1/grants/{created['id']}")))["voided_at"] is None
