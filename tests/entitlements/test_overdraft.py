"""The overdraft report: how far and for how long customers ran above what they paid for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from allotment.db import Database
from allotment.entitlements import check as checks
from allotment.entitlements import grants, overdraft_report, overrides, seats
from allotment.entitlements.engine import Grant
from allotment.entitlements.overdraft import Lease, Terms, metered_peak, seat_overdraft
from allotment.entitlements.schemas import AdhocIn
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.helpers import event, meter

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal


def hour(n: float) -> datetime:
    return T0 + timedelta(hours=n)


# --- the sweep (pure) -----------------------------------------------------------------------------


def test_story_2_seats_101_to_120_for_two_hours_are_forty_seat_hours():
    leases = [Lease(hour(1), None) for _ in range(100)] + [Lease(hour(2), hour(4)) for _ in range(20)]
    found = seat_overdraft(leases, [Terms(T0, None, D(100))], start=T0, end=hour(24))
    assert (found.peak, found.seconds_over, found.seat_hours_over, found.peak_over) == (120, 7200, 40, 20)
    assert [(e.started_at, e.ended_at, e.peak) for e in found.episodes] == [(hour(2), hour(4), 120)]


def test_only_time_under_terms_counts_and_new_terms_move_the_soft_limit():
    leases = [Lease(hour(0), None) for _ in range(5)]
    terms = [Terms(hour(1), hour(3), D(3)), Terms(hour(3), hour(5), D(4))]
    found = seat_overdraft(leases, terms, start=T0, end=hour(6))
    assert (found.seconds_over, found.seat_hours_over) == (4 * 3600, 2 * 2 + 1 * 2)
    assert [(e.started_at, e.ended_at, e.peak_over) for e in found.episodes] == [(hour(1), hour(5), 2)]


def test_an_episode_lasting_to_the_window_end_has_no_end():
    found = seat_overdraft([Lease(hour(1), None)] * 2, [Terms(T0, None, D(1))], start=T0, end=hour(2))
    assert [(e.started_at, e.ended_at) for e in found.episodes] == [(hour(1), None)]


_minutes = st.integers(min_value=0, max_value=60)
_leases = st.lists(st.tuples(_minutes, st.one_of(st.none(), _minutes)), max_size=12)
_terms = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=3)


def _minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def _build(raw: list[tuple[int, int | None]], softs: list[int]) -> tuple[list[Lease], list[Terms]]:
    leases = [Lease(_minute(a), None if b is None else _minute(max(a, b))) for a, b in raw]
    cut = 60 // len(softs)
    terms = [Terms(_minute(i * cut), None if i == len(softs) - 1 else _minute((i + 1) * cut), D(s))
             for i, s in enumerate(softs)]
    return leases, terms


@given(_leases, _terms)
def test_the_sweep_equals_a_minute_by_minute_count(raw, softs):
    leases, terms = _build(raw, softs)
    found = seat_overdraft(leases, terms, start=T0, end=_minute(60))
    over_minutes, unit_minutes, peak = 0, 0, 0
    for m in range(60):
        t = _minute(m)
        active = sum(1 for lease in leases if lease.start <= t and (lease.end is None or t < lease.end))
        soft = next(term.soft_limit for term in terms if term.start <= t and (term.end is None or t < term.end))
        peak = max(peak, active)
        if active > soft:
            over_minutes += 1
            unit_minutes += int(active - soft)
    assert (found.seconds_over, found.seat_seconds_over, found.peak) == (over_minutes * 60, unit_minutes * 60, peak)
    assert sum(((e.ended_at or _minute(60)) - e.started_at).total_seconds() for e in found.episodes) == over_minutes * 60


@given(_leases, _terms, st.integers(min_value=1, max_value=59))
def test_two_halves_of_a_window_add_up_to_the_whole(raw, softs, middle):
    leases, terms = _build(raw, softs)
    whole = seat_overdraft(leases, terms, start=T0, end=_minute(60))
    parts = [seat_overdraft(leases, terms, start=a, end=b)
             for a, b in ((T0, _minute(middle)), (_minute(middle), _minute(60)))]
    assert whole.seconds_over == sum(p.seconds_over for p in parts)
    assert whole.seat_seconds_over == sum(p.seat_seconds_over for p in parts)


def _grant(amount: int, start: float, end: float | None = None, **usage: Any) -> Grant:
    return Grant(id=f"g{start}", amount=D(amount), priority=1, effective_at=hour(start), created_at=hour(start),
                 expires_at=None if end is None else hour(end), **usage)


def test_a_period_is_judged_in_stretches_between_grant_starts_and_ends():
    """15 used when a top-up of 5 started (5 over 10), 16 at the end (1 over 15): the peak is 5."""
    peak = metered_peak([_grant(5, 2, usage_at_start=D(15))], D(10), D(16), last=hour(9))
    assert (peak.usage, peak.soft_limit, peak.overage) == (15, 10, 5)


def test_a_grant_that_ended_mid_period_raised_the_limit_while_live():
    """A grant of 5 live until 3h with 14 used then (4 of it paid): 14 was within 15; at the end
    18 is 4 over 10 + the 4 it paid."""
    ended = _grant(5, 0, 3, usage_at_end=D(14), paid_at_end=D(4))
    peak = metered_peak([ended], D(10), D(18), last=hour(9))
    assert (peak.usage, peak.soft_limit, peak.overage) == (18, 14, 4)
    assert metered_peak([ended], D(10), D(14), last=hour(9)).overage == 0


# --- the report ----------------------------------------------------------------------------------


async def _entitle(c: Any, db: Database, tenant_id: str, key: str, feature_key: str = "seats", **values: Any) -> None:
    """`key` entitled from T0 (an ad-hoc entitlement: a subscription's terms start when made)."""
    await customer(c, key)
    async with db.transaction() as s:
        data = AdhocIn(feature=feature_key, **({"kind": "seats", "included": 100, "hard_limit": 120} | values))
        await overrides.create_adhoc(s, tenant_id, key, data, actor="test", at=T0)


async def _seat(db: Database, tenant_id: str, action: str, item: str, at: datetime, key: str = "acme") -> Any:
    async with db.transaction() as s:
        if action == "activate":
            return await seats.activate(s, tenant_id, key, "seats", item, at=at)
        return await seats.release(s, tenant_id, key, "seats", item, at=at)


async def _report(db: Database, tenant_id: str, **options: Any) -> Any:
    async with db.transaction(readonly=True) as s:
        return await overdraft_report.report(s, tenant_id, at=datetime.now(UTC), **options)


async def test_seat_overdraft_shows_how_far_and_how_long_with_the_denials(tenant, db):
    """100 paid, cap 120: 110 active from 1h, 120 from 3h, the 121st denied at 4h, back to
    100 at 5h; one seat over again from 6h to 8h (an item reactivated after its release)."""
    await feature(tenant.client, "seats")
    await _entitle(tenant.client, db, tenant.id, "acme")
    for n in range(1, 111):
        await _seat(db, tenant.id, "activate", f"user-{n}", hour(1))
    for n in range(111, 121):
        await _seat(db, tenant.id, "activate", f"user-{n}", hour(3))
    assert (await _seat(db, tenant.id, "activate", "user-121", hour(4))).decision.decision == "deny"
    for n in range(101, 121):
        await _seat(db, tenant.id, "release", f"user-{n}", hour(5))
    await _seat(db, tenant.id, "activate", "user-101", hour(6))
    await _seat(db, tenant.id, "release", "user-101", hour(8))
    found, after = await _report(db, tenant.id, start=T0, end=hour(24))
    assert after is None and len(found) == 1
    [item] = found
    assert (item.customer, item.feature, item.kind, item.soft_limit, item.hard_limit) == ("acme", "seats", "seats", 100, 120)
    assert (item.seats.peak, item.seats.seconds_over, item.seats.seat_hours_over, item.denials) == (120, 6 * 3600, 62, 1)
    assert [(e.started_at, e.ended_at, e.peak, e.peak_over) for e in item.seats.episodes] == [
        (hour(1), hour(5), 120, 20), (hour(6), hour(8), 101, 1)
    ]
    later, _ = await _report(db, tenant.id, start=hour(5), end=hour(24))
    assert [(e.started_at, e.ended_at) for e in later[0].seats.episodes] == [(hour(6), hour(8))]
    assert later[0].denials == 0
    assert (await _report(db, tenant.id, start=hour(9), end=hour(24)))[0] == []


async def test_metered_overdraft_lists_the_periods_past_the_soft_limit(tenant, db):
    await feature(tenant.client, "tokens")
    await _entitle(tenant.client, db, tenant.id, "acme", "tokens", kind="metered", usage_period="MONTH",
                   usage_anchor=T0.isoformat(), included=10, hard_limit=15)
    for quantity, at in ((12, T0 + timedelta(days=4)), (5, T0 + timedelta(days=40)), (4, T0 + timedelta(days=41))):
        async with db.transaction() as s:
            request = checks.CheckRequest("acme", "tokens", D(quantity), consume=True)
            await checks.check(s, tenant.id, request, at=at)
    found, _ = await _report(db, tenant.id, start=T0, end=T0 + timedelta(days=60))
    [item] = found
    assert item.kind == "metered" and item.denials == 0
    assert [(p.period_start, p.usage, p.soft_limit, p.overage) for p in item.periods] == [(T0, 12, 10, 2)]


async def test_a_period_over_its_soft_limit_by_carried_overage_is_listed(tenant):
    """Daily rides, overage carried: 25 on the first day (15 over), 3 on the second, which
    with the 15 carried in is 18 (8 over) though no check ever fixed that carry."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter("rides", event_type="ride", value_property="$.n")), 201)
    await feature(c, "rides", meter="rides")
    await ok(await c.post("/v1/customers", json={"key": "rider", "name": "Rider", "subject_keys": ["card-9"]}), 201)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in (2, 1, 0)]
    await c.post("/v1/events", json=[event("card-9", "ride", n=n, time=(d + timedelta(minutes=1)).isoformat())
                                     for n, d in zip((25, 3, 1), days, strict=True)])
    await ok(await c.post("/v1/customers/rider/entitlements", json={
        "feature": "rides", "kind": "metered", "usage_period": "DAY", "included": 10, "overage_at_reset": "carry",
        "starts_at": days[0].isoformat()}), 201)
    report = await ok(await c.get("/v1/reports/overdraft", params={"from": (days[0] - timedelta(days=1)).isoformat()}))
    [item] = report["items"]
    assert [(p["usage"], p["overage"]) for p in item["periods"]] == [(25, 15), (18, 8)]


async def test_the_report_pages_by_customer_and_filters_by_customer_and_feature(tenant, db):
    c = tenant.client
    await feature(c, "seats")
    for key in ("acme", "globex", "initech"):
        await _entitle(c, db, tenant.id, key)
    for key in ("acme", "initech"):  # globex stays within its seats
        for n in range(101):
            await _seat(db, tenant.id, "activate", f"u{n}", hour(1), key=key)
    window = {"from": T0.isoformat(), "to": hour(2).isoformat()}
    first = await ok(await c.get("/v1/reports/overdraft", params={**window, "limit": 1}))
    second = await ok(await c.get("/v1/reports/overdraft",
                                  params={**window, "limit": 1, "cursor": first["next_cursor"]}))
    assert [i["customer"] for i in first["items"] + second["items"]] == ["acme", "initech"]
    assert second["next_cursor"] is None
    item = first["items"][0]
    assert (item["peak"], item["peak_overdraft"], item["overdraft_seconds"], item["overdraft_seat_hours"]) == (
        101, 1, 3600, 1)
    assert item["episodes"] == [{"started_at": hour(1).isoformat().replace("+00:00", "Z"), "ended_at": None,
                                 "peak": 101, "peak_overdraft": 1}]
    only = await ok(await c.get("/v1/reports/overdraft", params={**window, "customer": "initech", "feature": "seats"}))
    assert [i["customer"] for i in only["items"]] == ["initech"]


async def test_bad_report_windows_and_names_are_refused(tenant, other_tenant, db):
    c = tenant.client
    await feature(c, "seats")
    await _entitle(c, db, tenant.id, "acme")
    cases = [({"from": "yesterday"}, 422, "from"), ({"from": hour(5).isoformat(), "to": hour(1).isoformat()}, 422, "from")]
    for params, status, field in cases:
        resp = await c.get("/v1/reports/overdraft", params=params)
        assert resp.status_code == status, resp.text
        assert field in {e["field"] for e in resp.json()["errors"]}, resp.json()
    assert (await c.get("/v1/reports/overdraft", params={"customer": "nobody"})).status_code == 404
    later = await c.get("/v1/reports/overdraft", params={"to": "2999-01-01T00:00:00Z"})  # ends now
    assert later.status_code == 200, later.text
    assert (await c.get("/v1/reports/overdraft", params={"cursor": "nonsense"})).status_code == 400
    theirs = await ok(await other_tenant.client.get("/v1/reports/overdraft", params={"from": T0.isoformat()}))
    assert theirs == {"items": [], "next_cursor": None}


async def _metered(c: Any, db: Database, tenant_id: str, key: str, **values: Any) -> None:
    await _entitle(c, db, tenant_id, key, "tokens", kind="metered", usage_period="MONTH",
                   usage_anchor=T0.isoformat(), **values)


async def _consume(db: Database, tenant_id: str, quantity: int, at: datetime, key: str = "acme") -> str:
    async with db.transaction() as s:
        request = checks.CheckRequest(key, "tokens", D(quantity), consume=True)
        return (await checks.check(s, tenant_id, request, at=at)).decision.decision


async def test_story_1_a_top_up_bought_after_an_overdraft_does_not_erase_it(tenant, db):
    """1 M included, capped at 1.5 M: used to the cap, two consumes denied, then a 500 k top-up
    and 100 k more: the period ran 500 k above what was paid for then."""
    await feature(tenant.client, "tokens")
    await _metered(tenant.client, db, tenant.id, "acme", included=1_000_000, hard_limit=1_500_000)
    for n in range(3):
        assert await _consume(db, tenant.id, 500_000, T0 + timedelta(days=4, hours=n)) != "deny"
    for n in range(2):
        assert await _consume(db, tenant.id, 1000, T0 + timedelta(days=5, hours=n)) == "deny"
    async with db.transaction() as s:
        await grants.create(s, tenant.id, customer="acme", feature="tokens", amount=D(500_000),
                            at=T0 + timedelta(days=6))
    assert await _consume(db, tenant.id, 100_000, T0 + timedelta(days=7)) != "deny"  # 100 k over 1.5 M now
    found, _ = await _report(db, tenant.id, start=T0, end=T0 + timedelta(days=20))
    [item] = found
    assert item.denials == 2
    assert [(p.period_start, p.usage, p.soft_limit, p.overage) for p in item.periods] == [
        (T0, 1_500_000, 1_000_000, 500_000)]


async def test_story_1_over_http_the_overdraft_stays_when_nothing_is_used_after_the_top_up(tenant):
    """Soft limit 1 M, cap 1.5 M: used to the cap, two consumes denied, a 500 k top-up bought and
    nothing used since: still listed, 500 k over what was paid for then, with both denials."""
    c = tenant.client
    await feature(c, "tokens")
    await plan(c, "starter", [metered("tokens", 1_000_000, 1_000_000, 1_500_000)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")
    check = {"customer": "acme", "feature": "tokens", "consume": True}
    for _ in range(3):
        assert (await ok(await c.post("/v1/check", json=check | {"quantity": 500_000})))["decision"] != "deny"
    for _ in range(2):
        assert (await ok(await c.post("/v1/check", json=check | {"quantity": 1000})))["decision"] == "deny"
    await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 500_000}), 201)
    [item] = (await ok(await c.get("/v1/reports/overdraft")))["items"]
    assert (item["customer"], item["denials"], item["peak_overdraft"]) == ("acme", 2, 500_000)
    assert [(p["usage"], p["soft_limit"], p["overage"]) for p in item["periods"]] == [(1_500_000, 1_000_000, 500_000)]


async def test_a_pair_with_denials_and_no_overage_is_listed(tenant, db):
    """No overdraft allowed (cap = included): the refusals at the cap are still the evidence."""
    c = tenant.client
    await feature(c, "tokens")
    await _metered(c, db, tenant.id, "acme", included=10, hard_limit=10)
    await _consume(db, tenant.id, 10, T0 + timedelta(days=1))
    assert await _consume(db, tenant.id, 1, T0 + timedelta(days=2)) == "deny"
    report = await ok(await c.get("/v1/reports/overdraft", params={"from": T0.isoformat()}))
    [item] = report["items"]
    assert (item["customer"], item["denials"], item["peak_overdraft"], item["periods"]) == ("acme", 1, 0, [])


async def test_seats_denied_at_a_cap_equal_to_the_paid_seats_are_listed(tenant, db):
    await feature(tenant.client, "seats")
    await _entitle(tenant.client, db, tenant.id, "acme", hard_limit=100)
    for n in range(100):
        await _seat(db, tenant.id, "activate", f"user-{n}", hour(1))
    assert (await _seat(db, tenant.id, "activate", "user-100", hour(2))).decision.decision == "deny"
    found, _ = await _report(db, tenant.id, start=T0, end=hour(24))
    [item] = found
    assert (item.customer, item.denials, item.seats.episodes, item.seats.seconds_over) == ("acme", 1, (), 0)
