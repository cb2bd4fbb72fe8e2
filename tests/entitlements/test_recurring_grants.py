"""Recurring grants: they start over with their whole amount at each step of their recurrence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select

from allotment.entitlements import grant_ends, grants, resolve
from allotment.entitlements.engine import Decision, Grant
from allotment.entitlements.models import GrantRecord, GrantRecurrence
from allotment.entitlements.periods import Interval, UsagePeriod
from allotment.entitlements.recurring import (
    grant_id_of,
    instances,
    live_from,
    next_start,
    starts_within,
)
from allotment.types import from_micros
from tests.entitlements.catalogue import ok
from tests.entitlements.test_grants import _clockwork, _http_check, _http_customer, _post_grant

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal
UTC_ZONE = ZoneInfo("UTC")


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def weekly(anchor: datetime = T0) -> UsagePeriod:
    return UsagePeriod(Interval.WEEK, anchor, UTC_ZONE)


def _grant(**fields: object) -> Grant:
    values: dict[str, object] = {"id": "grt_1", "amount": D(10), "priority": 1, "effective_at": day(3),
                                 "created_at": day(3)}
    return Grant(**{**values, **fields})  # type: ignore[arg-type]


# --- the chain of instances (pure) -------------------------------------------------------------


def test_instances_run_from_step_to_step_and_the_first_starts_at_the_grant():
    found = instances(_grant(expires_at=day(17)), weekly(), after=T0, until=day(30))
    assert [(g.id, g.effective_at, g.expires_at, g.amount) for g in found] == [
        ("grt_1@0", day(3), day(7), 10),
        ("grt_1@1", day(7), day(14), 10),
        ("grt_1@2", day(14), day(17), 10),
    ]
    assert {grant_id_of(g.id) for g in found} == {"grt_1"}


def test_instances_leave_out_those_ended_by_after_and_those_starting_after_until():
    found = instances(_grant(), weekly(), after=day(14), until=day(21))
    assert [(g.id, g.effective_at, g.expires_at) for g in found] == [
        ("grt_1@2", day(14), day(21)), ("grt_1@3", day(21), day(28))
    ]


def test_a_void_ends_the_chain_and_no_instance_starts_after_it():
    found = instances(_grant(voided_at=day(10)), weekly(), after=T0, until=day(30))
    assert [(g.id, g.voided_at) for g in found] == [("grt_1@0", day(10)), ("grt_1@1", day(10))]


def test_start_overs_are_the_steps_after_the_grant_began_and_before_it_ended():
    assert starts_within(_grant(expires_at=day(21)), weekly(), after=T0, until=day(40)) == [day(7), day(14)]
    assert starts_within(_grant(), weekly(), after=day(7), until=day(14)) == [day(14)]
    assert live_from(_grant(), weekly(), day(9)) == day(7)
    assert (next_start(_grant(), weekly(), T0), next_start(_grant(), weekly(), day(7))) == (day(7), day(14))
    assert next_start(_grant(expires_at=day(14)), weekly(), day(7)) is None
    assert live_from(_grant(), weekly(), day(1)) == day(3)


def test_monthly_steps_in_a_zone_follow_its_wall_clock():
    paris = ZoneInfo("Europe/Paris")
    every = UsagePeriod(Interval.MONTH, datetime(2026, 1, 31, tzinfo=paris), paris)
    found = instances(_grant(effective_at=datetime(2026, 1, 31, tzinfo=paris)), every,
                      after=T0, until=datetime(2026, 4, 1, tzinfo=UTC))
    local = [g.effective_at.astimezone(paris).replace(tzinfo=None) for g in found]
    assert local == [datetime(2026, 1, 31), datetime(2026, 2, 28), datetime(2026, 3, 31)]


# --- through the service ---------------------------------------------------------------------


async def test_a_weekly_grant_starts_over_mid_period_and_what_it_paid_stays_paid(tenant, db):
    """10 a week on a monthly entitlement with nothing included: 8 used in the first week are
    paid by the first instance; the second holds 10 again, and the cap is 8 + 10."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    grant = await clock.grant(T0, amount=D(10), recurrence=weekly())
    await clock.consume(8, day(2))
    second_week = await clock.check(10, day(8))
    assert (second_week.decision.decision, second_week.decision.balance, second_week.decision.hard_limit) == (
        "allow", 10, 18)
    assert (await clock.check("10.5", day(8))).decision.decision == "deny"
    await clock.consume(4, day(9))  # the first write after the start-over keeps its usage (8)
    await clock.consume(1, day(10))
    now = await clock.check(1, day(11))
    assert (now.decision.usage, now.decision.balance, now.decision.hard_limit) == (13, 5, 18)
    third_week = await clock.check(1, day(15))
    assert (third_week.decision.balance, third_week.decision.hard_limit) == (10, 23)
    shown = await clock.state(day(15))
    assert [(g.grant.id, g.grant.amount, g.balance, g.grant.expires_at) for g in shown.grants] == [
        (grant, 10, 10, day(21))
    ]


async def test_a_new_instance_pays_nothing_of_what_included_units_paid_before_it(tenant, db):
    """A daily 5 burning before 100 included units: of the 8 used on day one, 5 were the day's
    grant and 3 included units; the next day's instance holds its whole 5, not 2."""
    clock = await _clockwork(tenant, db, included=100, usage_anchor=T0.isoformat())
    grant = await clock.grant(T0, amount=D(5), priority=0, recurrence=UsagePeriod(Interval.DAY, T0, UTC_ZONE))
    await clock.consume(8, day(0.5))
    next_day = await clock.state(day(1.5))
    assert ([(g.grant.id, g.balance) for g in next_day.grants], next_day.balance) == ([(grant, 5)], 102)
    await clock.consume(6, day(1.6))  # 5 from the day's grant, 1 included unit
    assert (await clock.state(day(1.7))).balance == 96


async def test_concurrent_first_consumes_after_a_start_over_keep_one_usage_and_stop_at_the_cap(tenant, db):
    """8 used in the first week; 24 concurrent consumes of 1 in the second: the start-over
    keeps 8 whoever writes first, and exactly 10 more are allowed (cap 8 paid + 10 live)."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    await clock.grant(T0, amount=D(10), recurrence=weekly())
    await clock.consume(8, day(2))
    answers = await asyncio.gather(*(clock.consume(1, day(8)) for _ in range(24)))
    assert sum(a.decision.decision != "deny" for a in answers) == 10
    after = await clock.check(1, day(9))
    assert (after.decision.usage, after.decision.hard_limit, after.decision.decision) == (18, 18, "deny")


async def test_a_recurring_grant_decides_as_the_chain_of_grants_it_stands_for(tenant, other_tenant, db):
    """The same usage against a weekly grant (one tenant) and against its instances created
    as plain grants (another): every check and every consume answers the same."""
    recurring_side = await _clockwork(tenant, db, included=2, hard_limit=4, usage_anchor=T0.isoformat())
    chain_side = await _clockwork(other_tenant, db, included=2, hard_limit=4, usage_anchor=T0.isoformat())
    await recurring_side.grant(day(1), amount=D(5), priority=2, max_rollover=D(1), recurrence=weekly())
    await recurring_side.grant(T0, amount=D(3), priority=1, expires_at=day(20))
    starts = [day(1), day(7), day(14), day(21), day(28), day(35), day(42)]
    for start, stop in zip(starts, starts[1:] + [day(49)]):
        await chain_side.grant(start, amount=D(5), priority=2, max_rollover=D(1), expires_at=stop)
    await chain_side.grant(T0, amount=D(3), priority=1, expires_at=day(20))
    by_recurring: list[tuple[Decision, Decision]] = []
    by_chain: list[tuple[Decision, Decision]] = []
    for n, quantity in ((0.5, 3), (2, 4), (6.5, 2), (9, 4), (13.9, 4), (20, 1), (30, 7), (33, 5), (44, 3)):
        at = day(n)
        for side, answers in ((recurring_side, by_recurring), (chain_side, by_chain)):
            before = await side.check(quantity, at)
            after = await side.consume(quantity, at + timedelta(hours=1))
            answers.append((before.decision, after.decision))
    assert by_recurring == by_chain
    assert len({before.decision for before, _ in by_chain}) > 1


async def test_a_voided_recurring_grant_does_not_start_over_again(tenant, db):
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    await clock.grant(T0, amount=D(10), recurrence=weekly())
    async with db.transaction() as s:
        found = await grants.list_(s, tenant.id, customer="acme", feature="data", at=T0)
        await grants.void(s, tenant.id, found[0].id, reason="refund", at=day(9))
    await clock.consume(3, day(2))
    assert (await clock.check(1, day(8))).decision.hard_limit == 13
    assert (await clock.check(1, day(15))).decision.decision == "deny"


async def test_recurrence_through_the_api_is_shown_and_bad_ones_are_refused(tenant):
    c = tenant.client
    await _http_customer(c, 0, None, 0)
    created = await _post_grant(c, amount=5, effective_at="2026-01-01T00:00:00Z",
                                recurrence={"interval": "DAY", "time_zone": "Europe/Paris"})
    assert created["recurrence"] == {"interval": "DAY", "anchor": "2026-01-01T00:00:00Z",
                                     "time_zone": "Europe/Paris", "timezone": "Europe/Paris"}
    older = await _post_grant(c, amount=1, recurrence={"interval": "WEEK", "timezone": "Asia/Tokyo"})
    assert older["recurrence"]["time_zone"] == "Asia/Tokyo"  # the name grants first took
    assert (await _http_check(c, quantity=5, consume=True))["decision"] == "allow"
    assert (await ok(await c.get(f"/v1/grants/{created['id']}")))["balance"] == 0
    plain = await _post_grant(c, amount=1)
    assert plain["recurrence"] is None
    url = "/v1/customers/acme/entitlements/tokens/grants"
    for recurrence, field in (({"interval": "HOUR"}, "recurrence.interval"),
                              ({"interval": "DAY", "time_zone": "Mars/Olympus"}, "recurrence.time_zone"),
                              ({"interval": "DAY", "timezone": "Mars/Olympus"}, "recurrence.timezone"),
                              ({"interval": "DAY", "anchor": "2026-01-01T00:00:00"}, "recurrence.anchor"),
                              ({}, "recurrence.interval")):
        resp = await c.post(url, json={"amount": 1, "recurrence": recurrence})
        assert resp.status_code == 422, resp.text
        assert [e["field"] for e in resp.json()["errors"]] == [field], resp.json()



async def test_usage_reported_late_into_an_old_period_keeps_nothing_for_later_ends(tenant, db):
    """A January counter written in April (a late event) keeps January's usage only for what
    ended in January: not for a grant that expired in March, nor for February's start-overs."""
    clock = await _clockwork(tenant, db, included=0, hard_limit=0, usage_anchor=T0.isoformat())
    expiring = await clock.grant(T0, amount=D(10), expires_at=day(73))  # mid-March
    weekly_id = await clock.grant(T0, amount=D(10), recurrence=weekly())
    await clock.consume(3, day(2))
    april = day(91)
    async with db.transaction() as s:
        row = (await checks_row(s, tenant.id))
        await grant_ends.record(s, row, T0, april, recurs=True)
    async with db.transaction(readonly=True) as s:
        kept = (await s.get(GrantRecord, expiring)).usage_at_end
        marks = sorted(t for (t,) in await s.execute(
            select(GrantRecurrence.at_us).where(GrantRecurrence.grant_id == weekly_id)))
    assert kept is None
    assert [from_micros(t) for t in marks] == [day(7), day(14), day(21), day(28)]


async def checks_row(session, tenant_id):  # type: ignore[no-untyped-def]
    """The customer's entitlement row to the feature `data` (as resolved by its checks)."""
    found = await resolve.target(session, tenant_id, "acme", "data", day(2))
    assert found.row is not None
    return found.row
