"""Upsell: projection math, the pick along next_tier, emission once per period, reads, the hint."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event as sa_event
from sqlalchemy import select

from allotment.db import Database
from allotment.entitlements import check as check_service
from allotment.entitlements import offers, upsell, upsell_hint, upsell_queue
from allotment.entitlements.engine import Decision, Reason, Verdict
from allotment.entitlements.models import UpsellDue
from allotment.entitlements.projection import (
    WARM_UP,
    Action,
    Limits,
    Recent,
    Tier,
    TopUpOffer,
    pick,
    project,
)
from allotment.notifications.models import Notification
from allotment.types import money, utcnow
from allotment.worker.delivery import DeliveryOptions, deliver_due, http_lanes
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.helpers import event, meter

T0 = datetime(2025, 3, 1, tzinfo=UTC)
MONTH_END = datetime(2025, 3, 31, tzinfo=UTC)  # a 30-day period
M = 1_000_000

# --- projection: properties against a naive reference ----------------------------------------

amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)
elapsed_hours = st.integers(min_value=1, max_value=30 * 24)
WARM_HOURS = 24  # a 30-day period warms up in a day


def linear_rate_per_day(usage: Decimal, hours: int) -> Decimal:
    """The period's own rate, once a day of it has passed."""
    return usage / (Decimal(hours) / 24) if hours >= WARM_HOURS else Decimal(0)


@given(usage=amounts, hours=st.integers(min_value=WARM_HOURS, max_value=30 * 24))
def test_projection_is_linear_without_recent_usage(usage: Decimal, hours: int) -> None:
    """With no trailing windows, usage goes on at usage / elapsed for the rest of the period."""
    at = T0 + timedelta(hours=hours)
    got = project(usage, period_start=T0, period_end=MONTH_END, at=at)
    naive = usage * Decimal(30 * 24) / Decimal(hours)
    assert abs(got.projected - naive) <= Decimal("0.000001")
    assert got.projected >= usage


@given(usage=amounts, more=amounts, hours=elapsed_hours, recent=amounts)
def test_projection_is_monotone_in_usage_and_recent_usage(
    usage: Decimal, more: Decimal, hours: int, recent: Decimal
) -> None:
    at = T0 + timedelta(hours=hours)
    day = timedelta(days=1)
    base = project(usage, period_start=T0, period_end=MONTH_END, at=at, recent=[Recent(recent, day)])
    bigger = project(usage + more, period_start=T0, period_end=MONTH_END, at=at, recent=[Recent(recent, day)])
    busier = project(usage, period_start=T0, period_end=MONTH_END, at=at, recent=[Recent(recent + more, day)])
    assert base.projected <= bigger.projected
    assert base.projected <= busier.projected
    assert base.projected >= project(usage, period_start=T0, period_end=MONTH_END, at=at).projected


@given(usage=amounts, recent=amounts, hours=elapsed_hours)
def test_projection_takes_the_fastest_rate(usage: Decimal, recent: Decimal, hours: int) -> None:
    at = T0 + timedelta(hours=hours)
    got = project(usage, period_start=T0, period_end=MONTH_END, at=at, recent=[Recent(recent, timedelta(days=1))])
    left = Decimal((MONTH_END - at).total_seconds()) / 86_400
    assert abs(got.projected - (usage + max(linear_rate_per_day(usage, hours), recent) * left)) <= Decimal("0.000002")


@given(usage=amounts)
def test_projection_at_or_after_the_period_end_is_the_usage(usage: Decimal) -> None:
    for at in (MONTH_END, MONTH_END + timedelta(days=3)):
        assert project(usage, period_start=T0, period_end=MONTH_END, at=at).projected == usage
    assert project(usage, period_start=T0, period_end=None, at=T0 + timedelta(days=1)).projected == usage


@given(usage=amounts, seconds=st.integers(min_value=0, max_value=int(WARM_UP.total_seconds()) - 1))
def test_before_a_day_of_the_month_has_passed_the_projection_is_the_usage(usage: Decimal, seconds: int) -> None:
    """10 units in the first second (or hours) of a month are not extrapolated to millions."""
    got = project(usage, period_start=T0, period_end=MONTH_END, at=T0 + timedelta(seconds=seconds))
    assert (got.projected, got.basis) == (usage, "early")


@given(usage=amounts, seconds=st.integers(min_value=1, max_value=30 * 86_400))
def test_without_trailing_windows_usage_is_never_multiplied_past_length_over_warm_up(
    usage: Decimal, seconds: int
) -> None:
    got = project(usage, period_start=T0, period_end=MONTH_END, at=T0 + timedelta(seconds=seconds))
    assert got.projected <= usage * 30 + Decimal("0.000001")


@given(minutes=st.integers(min_value=0, max_value=24 * 60 - 1))
def test_a_daily_period_warms_up_in_a_tenth_of_a_day(minutes: int) -> None:
    """A day cannot wait a day: its own rate counts from 2 h 24 min in."""
    got = project(Decimal(5), period_start=T0, period_end=T0 + timedelta(days=1), at=T0 + timedelta(minutes=minutes))
    assert got.basis == ("early" if minutes < 144 else "period")


def test_the_previous_days_rate_projects_a_period_that_just_started() -> None:
    """Trailing windows reach back before the period: a steady customer keeps its rate."""
    got = project(Decimal(10), period_start=T0, period_end=MONTH_END, at=T0 + timedelta(seconds=1),
                  recent=[Recent(Decimal(7_000), timedelta(days=7))])
    assert got.basis == "7d" and got.rate_per_day == 1_000
    assert 30_000 < got.projected <= 30_010


# --- pick -------------------------------------------------------------------------------------

STARTER = Limits(Decimal(M), Decimal(M), Decimal(1_500_000))
PRO = Tier("pro", "Pro", 1, Limits(Decimal(10 * M)))
ENTERPRISE = Tier("enterprise", "Enterprise", 1, None)
PACK = TopUpOffer(Decimal(500_000), Decimal("49.00"), "USD")


@given(projected=st.integers(min_value=0, max_value=M))
def test_nothing_to_suggest_when_the_projection_fits(projected: int) -> None:
    assert pick(Decimal(projected), STARTER, [PRO], top_up=PACK).action is Action.NONE


def test_first_tier_that_covers_wins_with_top_ups_as_the_alternative() -> None:
    chosen = pick(Decimal(3 * M), STARTER, [PRO, ENTERPRISE], top_up=PACK)
    assert (chosen.action, chosen.plan, chosen.covers) == (Action.UPGRADE, PRO, "soft")
    assert chosen.top_up is not None and (chosen.top_up.count, chosen.top_up.units) == (4, 2 * M)
    assert chosen.top_up.total_price == Decimal("196.00")
    assert pick(Decimal(20 * M), STARTER, [PRO, ENTERPRISE]).plan == ENTERPRISE  # unlimited covers


def test_top_ups_win_only_when_known_to_be_cheaper() -> None:
    priced = Tier("pro", "Pro", 1, Limits(Decimal(10 * M)), upgrade_cost=Decimal(500), currency="USD")
    assert pick(Decimal(2 * M), STARTER, [priced], top_up=PACK).action is Action.TOP_UP  # 2 x 49 < 500
    assert pick(Decimal(9 * M), STARTER, [priced], top_up=PACK).action is Action.UPGRADE  # 16 x 49 > 500
    euros = Tier("pro", "Pro", 1, Limits(Decimal(10 * M)), upgrade_cost=Decimal(500), currency="EUR")
    assert pick(Decimal(2 * M), STARTER, [euros], top_up=PACK).action is Action.UPGRADE  # not comparable


def test_top_of_the_chain_offers_top_ups_else_contact_sales() -> None:
    chosen = pick(Decimal(12 * M), STARTER, [], top_up=PACK)
    assert chosen.action is Action.TOP_UP and chosen.top_up is not None and chosen.top_up.count == 22
    assert pick(Decimal(12 * M), STARTER, []).action is Action.CONTACT_SALES
    capped = Tier("pro", "Pro", 1, Limits(Decimal(10 * M), None, Decimal(11 * M)))
    assert pick(Decimal(12 * M), STARTER, [capped]).action is Action.CONTACT_SALES


def test_a_tier_that_only_avoids_denial_is_suggested_as_overdraft_cover() -> None:
    uncapped = Tier("pro", "Pro", 1, Limits(Decimal(10 * M)))
    chosen = pick(Decimal(12 * M), STARTER, [uncapped])
    assert (chosen.action, chosen.plan, chosen.covers) == (Action.UPGRADE, uncapped, "hard")


def test_grants_raise_every_tier_too() -> None:
    """A grant stays with the customer across a plan change, so it counts on the next tier."""
    pro = Tier("pro", "Pro", 1, Limits(Decimal(10 * M), None, Decimal(10 * M)))
    assert pick(Decimal(11 * M), STARTER.raised(Decimal(2 * M)), [pro], extra=Decimal(2 * M)).plan == pro


def test_top_up_offers_parse_from_feature_metadata() -> None:
    offer = offers.top_up_offer({"top_up": {"amount": 500000, "price": "49.00", "currency": "usd",
                                            "expires_after_days": 90}})
    assert offer == TopUpOffer(Decimal(500000), Decimal("49.00"), "USD", 90)
    for bad in (None, {}, {"top_up": 5}, {"top_up": {"amount": 0}}, {"top_up": {"amount": "x"}},
                {"top_up": {"amount": 1, "price": -1}}, {"top_up": {"amount": 1, "currency": "dollars"}},
                {"top_up": {"amount": True}}, {"top_up": {"amount": "NaN"}}):
        assert offers.top_up_offer(bad) is None, bad


# --- the service, on both backends ------------------------------------------------------------


async def _catalogue(c: Any, *, pro_next: str | None = None, top_up: dict[str, Any] | None = None) -> None:
    """Story 1: Starter 1 M tokens (overdraft to 1.5 M), next tier Pro with 10 M."""
    await feature(c, "tokens", **({"metadata": {"top_up": top_up}} if top_up else {}))
    if pro_next:
        await plan(c, pro_next, [{"feature": "tokens", "kind": "boolean"}])
    await plan(c, "pro", [metered("tokens", 10 * M, None, 10 * M)], **({"next_tier": pro_next} if pro_next else {}))
    await plan(c, "starter", [metered("tokens", M, M, 1_500_000)], next_tier="pro")


async def _fed_by_events(c: Any) -> None:
    """Story 1's Starter and Pro, with the tokens feature counted from events by a meter."""
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await feature(c, "tokens", meter="tokens")
    await plan(c, "pro", [metered("tokens", 10 * M, None, 10 * M)])
    await plan(c, "starter", [metered("tokens", M, M, 1_500_000)], next_tier="pro")


async def _acme_reporting(c: Any) -> None:
    """Customer acme, whose events come from subject acme-1."""
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)


async def _customer(c: Any, key: str, plan_key: str = "starter", *, days_in: int = 15) -> None:
    """A customer whose monthly period started `days_in` days ago."""
    await customer(c, key)
    await subscribe(c, key, plan_key, starts_at=(utcnow() - timedelta(days=days_in)).isoformat())


async def _use(c: Any, key: str, quantity: int) -> dict[str, Any]:
    body = {"customer": key, "feature": "tokens", "quantity": quantity, "consume": True}
    return await ok(await c.post("/v1/check", json=body))  # type: ignore[no-any-return]


async def _upsell(c: Any, key: str) -> dict[str, Any]:
    items = (await ok(await c.get(f"/v1/customers/{key}/upsell")))["items"]
    assert len(items) == 1
    return items[0]  # type: ignore[no-any-return]


async def test_starter_customer_projecting_over_1m_is_offered_pro(tenant):
    """900 k tokens half way through the month projects to about 1.8 M: Pro (10 M) covers it."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    await _use(c, "acme", 900_000)
    got = await _upsell(c, "acme")
    assert (got["customer"], got["feature"], got["current_plan"], got["status"]) == ("acme", "tokens", "starter", "near_limit")
    assert (got["usage"], got["soft_limit"], got["hard_limit"]) == (900_000, M, 1_500_000)
    assert 1_700_000 < got["projection"]["usage_at_period_end"] < 1_900_000
    assert got["projection"]["basis"] == "period"
    assert got["suggestion"]["action"] == "upgrade"
    assert got["suggestion"]["plan"].items() >= {"key": "pro", "covers": "soft", "included": 10 * M}.items()


async def test_no_suggestion_when_the_projection_fits(tenant):
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    await _use(c, "acme", 100_000)
    got = await _upsell(c, "acme")
    assert (got["status"], got["suggestion"]) == ("within_limit", {"action": "none", "plan": None, "top_up": None})
    assert (await ok(await c.get("/v1/reports/upsell")))["items"] == []


async def test_top_of_the_chain_gets_top_ups_or_contact_sales(tenant):
    c = tenant.client
    await _catalogue(c, top_up={"amount": 500_000, "price": "49.00", "currency": "USD", "expires_after_days": 90})
    await _customer(c, "acme", "pro")
    await _use(c, "acme", 9 * M)  # projects to about 18 M against Pro's 10 M, and Pro has no next tier
    got = (await _upsell(c, "acme"))["suggestion"]
    assert got["action"] == "top_up" and got["plan"] is None
    assert got["top_up"]["count"] * 500_000 == got["top_up"]["units"] >= 7 * M
    assert (got["top_up"]["price"], got["top_up"]["currency"], got["top_up"]["expires_after_days"]) == ("49.00", "USD", 90)
    await ok(await c.patch("/v1/features/tokens", json={"metadata": {}}))
    assert (await _upsell(c, "acme"))["suggestion"]["action"] == "contact_sales"


async def test_top_up_prices_are_written_with_the_currency_minor_units(tenant):
    """A price the vendor wrote as "2.5" euros is shown as "2.50", and its total too; yen have none."""
    c = tenant.client
    await _catalogue(c, top_up={"amount": 500_000, "price": "2.5", "currency": "EUR"})
    await _customer(c, "acme", "pro")
    await _use(c, "acme", 9 * M)
    got = (await _upsell(c, "acme"))["suggestion"]["top_up"]
    assert got["price"] == "2.50" and got["total_price"] == f"{got['count'] * 2.5:.2f}"
    await ok(await c.patch("/v1/features/tokens", json={"metadata": {"top_up": {
        "amount": 500_000, "price": "300", "currency": "JPY"}}}))
    assert (await _upsell(c, "acme"))["suggestion"]["top_up"]["price"] == "300"


def test_money_keeps_finer_digits_and_adds_missing_minor_units() -> None:
    assert [str(money(Decimal(v), cur)) for v, cur in (("2.5", "EUR"), ("0.0004", "USD"), ("7", "KWD"),
                                                        ("1E+3", "USD"), ("12", None))] == [
        "2.50", "0.0004", "7.000", "1000.00", "12.00"]


async def test_an_unlimited_tier_above_covers(tenant):
    c = tenant.client
    await _catalogue(c, pro_next="enterprise")
    await _customer(c, "acme", "pro")
    await _use(c, "acme", 9 * M)
    got = (await _upsell(c, "acme"))["suggestion"]
    assert got["action"] == "upgrade"
    assert got["plan"].items() >= {"key": "enterprise", "unlimited": True, "covers": "soft"}.items()


async def test_grants_raise_the_limits_the_suggestion_judges(tenant):
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme", days_in=29)
    await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": M}), 201)
    await _use(c, "acme", 900_000)  # 45 % of 2 M, projecting under it
    got = await _upsell(c, "acme")
    assert (got["soft_limit"], got["hard_limit"], got["status"]) == (2 * M, 2_500_000, "within_limit")
    assert got["suggestion"]["action"] == "none"


async def test_recent_usage_from_rollups_speeds_up_the_projection(tenant):
    """Usage reported by events in the last day projects at that day's rate, not the month's."""
    c = tenant.client
    await _fed_by_events(c)
    await _acme_reporting(c)
    await subscribe(c, "acme", "starter", starts_at=(utcnow() - timedelta(days=15)).isoformat())
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=300_000)]))
    got = await _upsell(c, "acme")
    assert got["usage"] == 300_000
    assert got["projection"]["basis"] == "24h"
    assert got["projection"]["usage_at_period_end"] > 4 * M  # 300 k a day for ~15 more days
    assert got["suggestion"]["plan"]["key"] == "pro"


async def test_last_weeks_rate_projects_a_period_that_just_started(tenant):
    """A minute into the period, the trailing week (reaching back before it) gives the rate."""
    c = tenant.client
    await _fed_by_events(c)
    await _acme_reporting(c)
    now = utcnow()
    await subscribe(c, "acme", "starter", starts_at=(now - timedelta(minutes=1)).isoformat())
    before = (now - timedelta(days=2)).isoformat()
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=7 * M, time=before), event("acme-1", tokens=1_050_000)]))
    got = await _upsell(c, "acme")
    assert (got["usage"], got["projection"]["basis"], got["projection"]["rate_per_day"]) == (1_050_000, "7d", 1_150_000)
    assert got["projection"]["usage_at_period_end"] > 28 * 1_150_000


async def test_seat_overdraft_suggests_the_next_tier(tenant):
    """Story 2: 10 seats paid, overdraft to 12; at 11 the report shows it and Business covers."""
    c = tenant.client
    await feature(c, "seats")
    seats = {"feature": "seats", "kind": "seats"}
    await plan(c, "business", [{**seats, "included": 50}])
    await plan(c, "team", [{**seats, "included": 10, "soft_limit": 10, "hard_limit": 12}], next_tier="business")
    await customer(c, "acme")
    await subscribe(c, "acme", "team")
    for n in range(11):
        await ok(await c.post("/v1/customers/acme/seats/seats/activate", json={"item": f"user-{n}"}))
    got = await _upsell(c, "acme")
    assert (got["kind"], got["usage"], got["status"], got["overage"]) == ("seats", 11, "overdraft", 1)
    assert (got["projection"]["basis"], got["suggestion"]["action"]) == ("seats", "upgrade")
    assert got["suggestion"]["plan"]["key"] == "business" and got["suggestion"]["top_up"] is None
    report = await ok(await c.get("/v1/reports/upsell", params={"status": "overdraft"}))
    assert [(i["customer"], i["feature"], i["overage"]) for i in report["items"]] == [("acme", "seats", 1)]


# --- emission ---------------------------------------------------------------------------------


async def _row(db: Database, tenant_id: str, customer_key: str) -> Any:
    async with db.transaction(readonly=True) as session:
        return (await upsell.for_customer(session, tenant_id, customer_key, at=utcnow()))[0]


async def _emitted(db: Database, tenant_id: str) -> list[Notification]:
    """The suggestions emitted, after the worker's step that projects what crossings asked for."""
    await upsell_queue.suggest_due(db)
    async with db.transaction(readonly=True) as session:
        rows = await session.scalars(
            select(Notification).where(Notification.tenant_id == tenant_id, Notification.type == "upsell.suggested")
            .order_by(Notification.seq)
        )
        return list(rows)


async def _cross(
    db: Database, tenant_id: str, s: Any, usage: int, start: datetime, end: datetime, at: datetime | None = None
) -> Any:
    async with db.transaction() as session:
        return await upsell.suggest_on_crossing(
            session, tenant_id, s.row, usage=Decimal(usage), period_start=start, period_end=end, at=at or utcnow()
        )


async def test_upsell_is_emitted_once_per_entitlement_and_period(tenant, db):
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    await _use(c, "acme", 900_000)  # crosses 80 %, projecting 1.8 M: the crossing hook emits
    s = await _row(db, tenant.id, "acme")
    start, end = s.period_start, s.period_end
    assert len(await _emitted(db, tenant.id)) == 1
    assert await _cross(db, tenant.id, s, 1_100_000, start, end) is None  # crossed again: already told
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1 and sent[0].customer_id == s.row.customer_id
    payload = json.loads(sent[0].payload)
    assert (payload["customer"], payload["feature"], payload["usage"], payload["soft_limit"]) == ("acme", "tokens", 900_000, M)
    assert payload["suggestion"]["plan"]["key"] == "pro" and payload["period_start"] is not None
    assert payload["projection"]["usage_at_period_end"] > M
    # The next period is another occasion.
    again = await _cross(db, tenant.id, s, 900_000, end, end + timedelta(days=30), at=end + timedelta(days=15))
    assert again is not None and again.pick.plan is not None and again.pick.plan.plan_key == "pro"
    assert len(await _emitted(db, tenant.id)) == 2


async def test_a_suggestion_right_after_the_period_starts_does_not_extrapolate(tenant, db):
    """The webhook for an overdraft in a month's first seconds projects the usage so far."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme", days_in=0)
    await _use(c, "acme", 1_050_000)
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1
    payload = json.loads(sent[0].payload)
    assert payload["projection"] == {"usage_at_period_end": 1_050_000, "rate_per_day": 0, "basis": "early"}
    assert payload["suggestion"]["plan"]["key"] == "pro"


async def test_nothing_is_emitted_when_the_projection_fits(tenant, db):
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme", days_in=29)
    await _use(c, "acme", 800_000)
    s = await _row(db, tenant.id, "acme")
    assert await _cross(db, tenant.id, s, 800_000, s.period_start, s.period_end) is None
    assert await _emitted(db, tenant.id) == []


async def test_usage_crossing_into_overdraft_emits_one_suggestion_end_to_end(tenant, db):
    """Consumes cross into overdraft and on to the hard limit: one `upsell.suggested`, for Pro."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    await _use(c, "acme", 900_000)
    await _use(c, "acme", 200_000)  # into overdraft
    await _use(c, "acme", 400_000)  # to the hard limit
    assert (await _use(c, "acme", 1))["decision"] == "deny"
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1
    payload = json.loads(sent[0].payload)
    assert (payload["customer"], payload["suggestion"]["plan"]["key"]) == ("acme", "pro")


async def test_a_crossing_asks_and_the_next_delivery_round_suggests(tenant, db):
    """The consume that crosses only queues the projection; the worker's round emits it once,
    projected from the crossing's usage and time, however many crossings asked meanwhile."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    await _use(c, "acme", 900_000)  # 80 %
    await _use(c, "acme", 200_000)  # overdraft: asks again for the same period
    async with db.transaction(readonly=True) as session:
        asked = list(await session.scalars(select(UpsellDue)))
        told = await session.scalar(select(Notification).where(Notification.type == "upsell.suggested"))
    assert [(a.usage, a.period_end is not None) for a in asked] == [(1_100_000 * M, True)] and told is None
    async with http_lanes(DeliveryOptions()) as lanes:
        await deliver_due(db, lanes, at=utcnow())
        await deliver_due(db, lanes, at=utcnow())
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1 and json.loads(sent[0].payload)["usage"] == 1_100_000
    async with db.transaction(readonly=True) as session:
        assert list(await session.scalars(select(UpsellDue))) == []


async def test_an_ask_that_cannot_be_projected_is_dropped_without_stopping_delivery(tenant, db):
    """The customer was deleted between the crossing and the worker's round: that ask is
    dropped (logged), the others are projected, and webhooks still go out."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "gone")
    await _customer(c, "acme")
    await _use(c, "gone", 900_000)
    await _use(c, "acme", 900_000)
    for sub in (await ok(await c.get("/v1/subscriptions", params={"customer": "gone"})))["items"]:
        await ok(await c.post(f"/v1/subscriptions/{sub['id']}/cancel", json={}))
    await ok(await c.delete("/v1/customers/gone"), 204)
    async with http_lanes(DeliveryOptions()) as lanes:
        await deliver_due(db, lanes, at=utcnow())
    sent = await _emitted(db, tenant.id)
    assert [json.loads(n.payload)["customer"] for n in sent] == ["acme"]
    async with db.transaction(readonly=True) as session:
        assert list(await session.scalars(select(UpsellDue))) == []


async def test_a_refused_request_is_in_the_suggestion_it_causes(tenant, db):
    """A 2 M request refused at Starter's cap asks for a suggestion: the webhook, like the
    customer's upsell, counts the denial and offers what would have let it through."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme")
    refused = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "tokens", "quantity": 2 * M}))
    assert refused["decision"] == "deny"
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1
    payload = json.loads(sent[0].payload)
    assert (payload["status"], payload["denials"], payload["last_denied_at"] is not None) == ("denied", 1, True)
    assert payload["suggestion"]["plan"]["key"] == "pro"
    assert payload["projection"]["usage_at_period_end"] >= 2 * M


async def test_pay_as_you_go_is_offered_nothing(tenant):
    """Nothing included and no limit: every use is billed and none can be refused, so however
    fast the usage grows there is nothing to cover (not a call to sales)."""
    c = tenant.client
    await feature(c, "calls")
    await plan(c, "per-call", [metered("calls", 0)])
    await _customer(c, "acme", "per-call")
    use = {"customer": "acme", "feature": "calls", "quantity": 900, "consume": True}
    assert (await ok(await c.post("/v1/check", json=use)))["reason"] == "pay_as_you_go"
    got = await _upsell(c, "acme")
    assert (got["status"], got["suggestion"]) == ("within_limit", {"action": "none", "plan": None, "top_up": None})


async def test_ingested_usage_crossing_emits_a_suggestion(tenant, db):
    c = tenant.client
    await _fed_by_events(c)
    await _acme_reporting(c)
    await subscribe(c, "acme", "starter", starts_at=(utcnow() - timedelta(days=15)).isoformat())
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=1_100_000)]))
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1
    payload = json.loads(sent[0].payload)
    assert (payload["usage"], payload["projection"]["basis"]) == (1_100_000, "24h")


async def test_a_seat_overdraft_emits_a_suggestion_end_to_end(tenant, db):
    c = tenant.client
    await feature(c, "seats")
    await plan(c, "business", [{"feature": "seats", "kind": "seats", "included": 50}])
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": 2, "hard_limit": 4}], next_tier="business")
    await customer(c, "acme")
    await subscribe(c, "acme", "team")
    for n in range(4):
        await ok(await c.post("/v1/customers/acme/seats/seats/activate", json={"item": f"user-{n}"}))
    sent = await _emitted(db, tenant.id)
    assert len(sent) == 1
    payload = json.loads(sent[0].payload)
    assert (payload["feature"], payload["usage"], payload["suggestion"]["plan"]["key"]) == ("seats", 3, "business")


# --- the report ---------------------------------------------------------------------------------


async def _sales_floor(c: Any) -> None:
    """Near the limit, in overdraft, denied, and one well within it."""
    await _catalogue(c)
    for key, used in (("near", 850_000), ("over", 1_200_000), ("denied", 1_500_000), ("calm", 100_000)):
        await _customer(c, key, days_in=20)
        await _use(c, key, used)
    body = {"customer": "denied", "feature": "tokens", "quantity": 10, "consume": True}
    assert (await ok(await c.post("/v1/check", json=body)))["decision"] == "deny"


async def test_report_lists_near_limit_overdraft_and_denied_customers_with_projections(tenant):
    c = tenant.client
    await _sales_floor(c)
    items = (await ok(await c.get("/v1/reports/upsell")))["items"]
    got = {i["customer"]: i for i in items}
    assert set(got) == {"near", "over", "denied"}
    assert {k: v["status"] for k, v in got.items()} == {"near": "near_limit", "over": "overdraft", "denied": "denied"}
    assert (got["denied"]["denials"], got["denied"]["overage"]) == (1, 500_000)
    assert got["denied"]["last_denied_at"] is not None
    assert all(i["projection"]["usage_at_period_end"] > i["usage"] for i in items)
    assert all(i["suggestion"]["plan"]["key"] == "pro" for i in items)
    over = await ok(await c.get("/v1/reports/upsell", params={"status": "overdraft"}))
    assert {i["customer"] for i in over["items"]} == {"over", "denied"}
    denied = await ok(await c.get("/v1/reports/upsell", params={"status": "denied", "feature": "tokens"}))
    assert [i["customer"] for i in denied["items"]] == ["denied"]


async def test_report_pages_with_a_cursor(tenant):
    c = tenant.client
    await _sales_floor(c)
    seen, cursor = [], None
    while True:
        page = await ok(await c.get("/v1/reports/upsell", params={"limit": 1, **({"cursor": cursor} if cursor else {})}))
        seen += [i["customer"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["denied", "near", "over"]


async def test_report_and_customer_reads_are_tenant_isolated(tenant, other_tenant):
    await _sales_floor(tenant.client)
    o = other_tenant.client
    assert (await ok(await o.get("/v1/reports/upsell")))["items"] == []
    resp = await o.get("/v1/customers/over/upsell")
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")


async def test_a_customers_upsell_pages_by_feature_key_like_every_list(tenant):
    """`limit` and `cursor` walk the customer's counted features in key order."""
    c = tenant.client
    for key in ("api-calls", "tokens"):
        await feature(c, key)
    await plan(c, "starter", [metered("api-calls", M, M, M), metered("tokens", M, M, M)])
    await _customer(c, "acme")
    first = await ok(await c.get("/v1/customers/acme/upsell", params={"limit": 1}))
    rest = await ok(await c.get("/v1/customers/acme/upsell", params={"limit": 1, "cursor": first["next_cursor"]}))
    assert [i["feature"] for i in first["items"] + rest["items"]] == ["api-calls", "tokens"]
    resp = await c.get("/v1/customers/acme/upsell", params={"limit": 1001})
    assert (resp.status_code, resp.json()["errors"][0]["field"]) == (422, "limit")


async def test_bad_input_is_named(tenant, db):
    c = tenant.client
    await _catalogue(c)
    resp = await c.get("/v1/customers/nobody/upsell")
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
    assert "nobody" in resp.json()["detail"]
    resp = await c.get("/v1/reports/upsell", params={"feature": "nothing"})
    assert (resp.status_code, resp.json()["type"]) == (404, "feature_not_found")
    assert "nothing" in resp.json()["detail"]
    resp = await c.get("/v1/reports/upsell", params={"status": "calm"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"].endswith("status")
    assert (await c.get("/v1/reports/upsell", params={"cursor": "garbage"})).status_code == 400
    ingest = {"Authorization": f"Bearer {await tenant.key('ingest', db)}"}
    assert (await c.get("/v1/reports/upsell", headers=ingest)).status_code == 403


# --- the check's hint ---------------------------------------------------------------------------


async def test_check_hints_at_an_upgrade_on_overdraft_and_deny_only(tenant):
    c = tenant.client
    await _catalogue(c, top_up={"amount": 500_000})
    await _customer(c, "acme")
    allowed = await _use(c, "acme", 900_000)
    assert (allowed["decision"], allowed["upsell"]) == ("allow", None)
    over = await _use(c, "acme", 200_000)
    assert over["decision"] == "allow_overdraft"
    assert over["upsell"].items() >= {"action": "upgrade", "plan": "pro", "href": "/v1/customers/acme/upsell"}.items()
    assert over["upsell"]["top_ups"] >= 2 and over["upsell"]["projected_usage"] > 1_100_000
    denied = await _use(c, "acme", 500_000)
    assert (denied["decision"], denied["upsell"]["plan"]) == ("deny", "pro")


async def test_a_check_right_after_the_period_starts_projects_the_usage_not_a_rate(tenant):
    """1.05 M tokens in the first seconds of a month project to 1.05 M, not hundreds of millions."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme", days_in=0)
    over = await _use(c, "acme", 1_050_000)
    assert over["decision"] == "allow_overdraft"
    assert (over["upsell"]["projected_usage"], over["upsell"]["plan"]) == (1_050_000, "pro")


async def test_check_hint_follows_catalogue_changes(tenant):
    """The per-process catalogue is proven current before use: a new next tier shows at once."""
    c = tenant.client
    await _catalogue(c)
    await _customer(c, "acme", "pro")
    await _use(c, "acme", 10 * M)
    assert (await _use(c, "acme", 1))["upsell"]["action"] == "contact_sales"
    await plan(c, "enterprise", [{"feature": "tokens", "kind": "boolean"}])
    await plan(c, "pro", [metered("tokens", 10 * M, None, 10 * M)], next_tier="enterprise")
    hint = (await _use(c, "acme", 1))["upsell"]
    assert (hint["action"], hint["plan"]) == ("upgrade", "enterprise")


async def _statements_of_report(db: Database, tenant_id: str) -> tuple[int, int]:
    statements: list[str] = []
    engine = db.read_engine.sync_engine

    def count(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        async with db.transaction(readonly=True) as session:
            found, _ = await upsell.report(session, tenant_id, at=utcnow())
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    return len(found), len(statements)


async def test_report_costs_the_same_statements_for_few_or_many_customers(tenant, db):
    """Rows are judged set-based: more customers, not more statements."""
    c = tenant.client
    await _fed_by_events(c)

    async def add(n: int) -> None:
        await ok(await c.post("/v1/customers", json={"key": f"c{n}", "name": "C", "subject_keys": [f"s{n}"]}), 201)
        await subscribe(c, f"c{n}", "starter", starts_at=(utcnow() - timedelta(days=20)).isoformat())
        await ok(await c.post("/v1/events", json=[event(f"s{n}", tokens=900_000)]))

    for n in range(2):
        await add(n)
    few = await _statements_of_report(db, tenant.id)
    for n in range(2, 12):
        await add(n)
    many = await _statements_of_report(db, tenant.id)
    assert (few[0], many[0]) == (2, 12)
    assert many[1] == few[1]


class _NoDatabase:
    """Fails on any use: proves a code path reads nothing."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


async def test_an_allowed_check_reads_nothing_for_the_hint():
    request = check_service.CheckRequest("acme", "tokens", Decimal(1))
    allowed = check_service.CheckResult(
        Decision(Verdict.ALLOW, Reason.WITHIN_LIMIT, Decimal(5), Decimal(10), Decimal(10)), T0, MONTH_END
    )
    assert await upsell_hint.hint(_NoDatabase(), "ten_x", request, allowed, at=T0) is None  # type: ignore[arg-type]


async def test_a_hold_refused_at_the_plug_suggests_top_ups_that_would_have_let_it_through(tenant):
    """Story 3: 7.6 kWh left and a 30 kWh hold refused: the suggestion covers the refused hold
    (two 20 kWh packs), though usage alone, which never resets, projects within the credit."""
    c = tenant.client
    await feature(c, "kwh", unit="kWh", metadata={"top_up": {"amount": 20, "price": "9", "currency": "EUR"}})
    await plan(c, "prepaid", [{"feature": "kwh", "kind": "metered", "usage_period": "NONE", "included": 0,
                               "soft_limit": 0, "hard_limit": 0}])
    await customer(c, "driver")
    await subscribe(c, "driver", "prepaid")
    await ok(await c.post("/v1/customers/driver/entitlements/kwh/grants", json={"amount": 50}), 201)
    await ok(await c.post("/v1/check", json={"customer": "driver", "feature": "kwh", "quantity": 42.4, "consume": True}))
    hold = await c.post("/v1/reservations", json={"customer": "driver", "feature": "kwh", "quantity": 30,
                                                  "ttl_seconds": 600})
    assert hold.json()["decision"] == "deny"
    got = await _upsell(c, "driver")
    assert got["status"] == "denied"
    assert got["suggestion"]["action"] == "top_up"
    assert (got["suggestion"]["top_up"]["count"], got["suggestion"]["top_up"]["total_price"]) == (2, "18.00")
