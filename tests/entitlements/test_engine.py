"""The entitlement engine: checks per kind, grant burn-down and rollover, against naive references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from allotment.entitlements.engine import (
    BooleanEntitlement,
    Grant,
    InvalidEntitlement,
    InvalidQuantity,
    MeteredEntitlement,
    SeatsEntitlement,
    StaticEntitlement,
    Verdict,
    burn,
    burn_order,
    decide,
    decide_seats,
    rollover,
    settle,
)
from allotment.errors import ValidationFailed

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AT = T0 + timedelta(days=15)
EXAMPLES = settings(max_examples=100, deadline=None)


def at_day(day: int) -> datetime:
    return T0 + timedelta(days=day)


def grant(
    gid: str,
    amount: Decimal | str | int,
    *,
    priority: int = 1,
    expires: int | None = None,
    created: int = 0,
    effective: int = 0,
    voided: int | None = None,
    min_rollover: Decimal | str | int = 0,
    max_rollover: str | int | None = None,
) -> Grant:
    """A grant with times given as days after T0."""
    return Grant(
        id=gid,
        amount=D(amount),
        priority=priority,
        effective_at=at_day(effective),
        created_at=at_day(created),
        expires_at=None if expires is None else at_day(expires),
        voided_at=None if voided is None else at_day(voided),
        min_rollover=D(min_rollover),
        max_rollover=None if max_rollover is None else D(max_rollover),
    )


# --- strategies ---------------------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=10_000, places=2)
whole = st.integers(0, 60).map(D)


@st.composite
def grants_(draw: st.DrawFn, amount: st.SearchStrategy[Decimal] = amounts) -> list[Grant]:
    """Up to six grants with colliding priorities, expiries and creation times, some dead."""
    out = []
    for i in range(draw(st.integers(0, 6))):
        effective = draw(st.integers(0, 20))
        expires = draw(st.one_of(st.none(), st.integers(effective + 1, 40)))
        voided = draw(st.one_of(st.none(), st.none(), st.integers(0, 40)))
        out.append(
            grant(
                f"g{i}",
                draw(amount),
                priority=draw(st.integers(0, 3)),
                expires=expires,
                created=draw(st.integers(0, 3)),
                effective=effective,
                voided=voided,
            )
        )
    return out


@st.composite
def limits(draw: st.DrawFn) -> MeteredEntitlement:
    included = draw(amounts)
    soft = draw(st.one_of(st.none(), amounts.map(lambda extra: included + extra)))
    base = included if soft is None else soft
    hard = draw(st.one_of(st.none(), amounts.map(lambda extra: base + extra)))
    return MeteredEntitlement(included, soft, hard)


quantities = st.decimals(min_value=D("0.01"), max_value=30_000, places=2)


# --- naive references ---------------------------------------------------------------------------


def burns_before(a: Grant, b: Grant) -> bool:
    """Reference for the burn order, written as the rule reads."""
    if a.priority != b.priority:
        return a.priority < b.priority
    if a.expires_at != b.expires_at:
        if a.expires_at is None or b.expires_at is None:
            return b.expires_at is None
        return a.expires_at < b.expires_at
    if a.created_at != b.created_at:
        return a.created_at < b.created_at
    return a.id < b.id


def live(g: Grant, at: datetime) -> bool:
    if g.expires_at is not None and g.expires_at <= at:
        return False
    if g.voided_at is not None and g.voided_at <= at:
        return False
    return g.effective_at <= at


def naive_burn(
    grants: Sequence[Grant], included: Decimal, usage: int, at: datetime, included_until: datetime | None
) -> dict[str, Decimal]:
    """Reference: spend one unit at a time from the best source that still has one; included
    units are a grant of priority 1 expiring at `included_until`, first among its equals."""
    included_as_grant = _included_as_grant(included, included_until)
    left = {g.id: g.amount for g in grants if live(g, at)} | {"": included}
    for _ in range(usage):
        candidates = [g for g in [included_as_grant, *grants] if left.get(g.id, 0) > 0]
        if not candidates:
            break
        left[_best(candidates).id] -= 1
    return {g.id: left[g.id] if g.id in left else untouched(g, at) for g in grants} | {"": left[""]}


def _included_as_grant(included: Decimal, included_until: datetime | None) -> Grant:
    return Grant(id="", amount=included, priority=1, effective_at=T0 - timedelta(days=1),
                 created_at=datetime.min.replace(tzinfo=UTC), expires_at=included_until)


def _best(candidates: Sequence[Grant]) -> Grant:
    """The candidate that burns before all others."""
    best = candidates[0]
    for g in candidates[1:]:
        if burns_before(g, best):
            best = g
    return best


def untouched(g: Grant, at: datetime) -> Decimal:
    """What a grant that could not be spent keeps: nothing once ended, all before it starts."""
    ended = any(t is not None and t <= at for t in (g.expires_at, g.voided_at))
    return D(0) if ended else g.amount


def naive_verdict(
    ent: MeteredEntitlement, usage: Decimal, reserved: Decimal, grants: Sequence[Grant], q: Decimal
) -> Verdict:
    """Reference: the limits recomputed from the definition."""
    extra = sum((g.amount for g in grants if live(g, AT)), D(0))
    soft = (ent.soft_limit if ent.soft_limit is not None else ent.included) + extra
    total = usage + reserved + q
    if total <= soft:
        return Verdict.ALLOW
    if ent.hard_limit is None and ent.soft_limit is None and ent.included == 0:  # pay as you go
        return Verdict.ALLOW
    if ent.hard_limit is None or total <= ent.hard_limit + extra:
        return Verdict.ALLOW_OVERDRAFT
    return Verdict.DENY


# --- the worked examples ------------------------------------------------------------------------


def test_seats_overdraft_between_paid_and_cap() -> None:
    """100 seats paid, cap 120: the 101st..120th seat is overdraft, the 121st is denied."""
    ent = SeatsEntitlement(included=D(100), hard_limit=D(120))
    assert decide(ent, usage=D(99), at=AT).decision is Verdict.ALLOW
    for active in range(100, 120):
        assert decide(ent, usage=D(active), at=AT).decision is Verdict.ALLOW_OVERDRAFT
    denied = decide(ent, usage=D(120), at=AT)
    assert (denied.decision, denied.reason) == (Verdict.DENY, "hard_limit")


def test_decide_seats_counts_the_seats_being_activated() -> None:
    """Activating 21 seats on top of 100 crosses the cap of 120 even though 20 would not."""
    assert decide_seats(D(100), D(20), D(100), D(100), D(120)).decision is Verdict.ALLOW_OVERDRAFT
    assert decide_seats(D(100), D(21), D(100), D(100), D(120)).decision is Verdict.DENY


def test_metered_overdraft_up_to_the_hard_limit() -> None:
    """Included 1,000,000, hard 1,500,000, usage 1,499,999: +1 is overdraft, +2 is denied."""
    ent = MeteredEntitlement(D(1_000_000), D(1_000_000), D(1_500_000))
    one = decide(ent, usage=D(1_499_999), quantity=D(1), at=AT)
    two = decide(ent, usage=D(1_499_999), quantity=D(2), at=AT)
    assert (one.decision, one.reason) == (Verdict.ALLOW_OVERDRAFT, "soft_limit")
    assert (two.decision, two.reason) == (Verdict.DENY, "hard_limit")
    assert (one.balance, one.overage) == (D(0), D(499_999))


def test_metered_within_soft_limit_reports_balance() -> None:
    ent = MeteredEntitlement(D(1000), hard_limit=D(1200))
    result = decide(ent, usage=D(600), reserved=D(100), quantity=D(300), at=AT)
    assert result.decision is Verdict.ALLOW
    assert (result.usage, result.included, result.soft_limit, result.hard_limit) == (
        D(600), D(1000), D(1000), D(1200)
    )  # fmt: skip
    assert (result.balance, result.overage) == (D(300), D(0))


# --- metered checks -----------------------------------------------------------------------------


def test_reserved_units_count_as_spent() -> None:
    """Two reservations can never spend the same unit."""
    ent = MeteredEntitlement(D(10), hard_limit=D(10))
    assert decide(ent, usage=D(5), reserved=D(5), at=AT).decision is Verdict.DENY
    assert decide(ent, usage=D(5), reserved=D(4), at=AT).decision is Verdict.ALLOW


def test_live_grants_raise_soft_and_hard_limits() -> None:
    """A prepaid top-up extends both the included amount and the cap."""
    ent = MeteredEntitlement(D(100), hard_limit=D(150))
    result = decide(ent, usage=D(100), grants=[grant("top-up", 50)], quantity=D(100), at=AT)
    assert (result.soft_limit, result.hard_limit) == (D(150), D(200))
    assert result.decision is Verdict.ALLOW_OVERDRAFT


def test_ended_and_future_grants_raise_nothing() -> None:
    """Expired, voided and not-yet-effective grants are not available at `at`."""
    ent = MeteredEntitlement(D(100))
    dead = [
        grant("expired", 50, expires=15),  # expires exactly at AT
        grant("voided", 50, voided=10),
        grant("future", 50, effective=16),
    ]
    assert decide(ent, grants=dead, at=AT).soft_limit == D(100)


def test_no_hard_limit_never_denies() -> None:
    ent = MeteredEntitlement(D(10))
    result = decide(ent, usage=D(10**9), quantity=D(10**9), at=AT)
    assert (result.decision, result.overage) == (Verdict.ALLOW_OVERDRAFT, D(10**9 - 10))


@pytest.mark.parametrize("quantity", [D(0), D(-1), D("NaN"), D("Infinity")])
def test_quantity_must_be_positive(quantity: Decimal) -> None:
    with pytest.raises(
        InvalidQuantity, match="quantity: must be a number greater than zero"
    ) as info:
        decide(MeteredEntitlement(D(10)), quantity=quantity, at=AT)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ValidationFailed)
    assert [e.field for e in info.value.errors] == ["quantity"]


def test_usage_corrected_below_zero_reads_as_none() -> None:
    """Corrections past what was counted never credit more than the period includes."""
    below = decide(MeteredEntitlement(D(10), hard_limit=D(10)), usage=D(-5), quantity=D(10), at=AT)
    assert (below.decision, below.usage, below.balance) == (Verdict.ALLOW, D(0), D(10))
    assert decide(MeteredEntitlement(D(10), hard_limit=D(10)), usage=D(-5), quantity=D(11), at=AT).decision is Verdict.DENY
    with pytest.raises(InvalidQuantity, match="usage"):
        decide(MeteredEntitlement(D(10)), usage=D("NaN"), at=AT)


def test_hard_limit_below_soft_limit_is_rejected() -> None:
    """Otherwise an "allow" could pass the hard limit."""
    with pytest.raises(InvalidEntitlement, match="hard_limit"):
        MeteredEntitlement(D(100), hard_limit=D(99))
    with pytest.raises(InvalidEntitlement, match="hard_limit"):
        decide_seats(D(0), D(1), D(10), D(20), D(15))


def test_naive_check_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        decide(MeteredEntitlement(D(1)), at=datetime(2026, 1, 1))


@EXAMPLES
@given(limits(), amounts, amounts, grants_(), quantities, quantities)
def test_decide_is_monotone_in_quantity(
    ent: MeteredEntitlement,
    usage: Decimal,
    reserved: Decimal,
    grants: list[Grant],
    q1: Decimal,
    q2: Decimal,
) -> None:
    """A larger request is never treated better than a smaller one."""
    small, large = sorted((q1, q2))
    rank = {Verdict.ALLOW: 0, Verdict.ALLOW_OVERDRAFT: 1, Verdict.DENY: 2}

    def verdict(q: Decimal) -> int:
        return rank[
            decide(ent, usage=usage, reserved=reserved, grants=grants, quantity=q, at=AT).decision
        ]

    assert verdict(small) <= verdict(large)


@EXAMPLES
@given(limits(), amounts, amounts, grants_(), quantities)
def test_decide_matches_the_definition(
    ent: MeteredEntitlement, usage: Decimal, reserved: Decimal, grants: list[Grant], q: Decimal
) -> None:
    """Verdict, balance and overage equal a from-scratch reading of the limits."""
    result = decide(ent, usage=usage, reserved=reserved, grants=grants, quantity=q, at=AT)
    assert result.decision is naive_verdict(ent, usage, reserved, grants, q)
    assert result.soft_limit is not None
    assert result.balance == max(D(0), result.soft_limit - usage - reserved)
    assert result.overage == max(D(0), usage - result.soft_limit)
    if result.decision is not Verdict.DENY and result.hard_limit is not None:
        assert usage + reserved + q <= result.hard_limit


# --- boolean and static -------------------------------------------------------------------------


def test_boolean_entitlement_allows_or_denies() -> None:
    assert decide(BooleanEntitlement(True), at=AT).decision is Verdict.ALLOW
    denied = decide(BooleanEntitlement(False), at=AT)
    assert (denied.decision, denied.reason, denied.usage) == (Verdict.DENY, "no_access", None)


def test_an_entitlement_without_included_units_or_limits_pays_as_it_goes() -> None:
    """Nothing promised, nothing to be over: allowed, past what grants hold as pay_as_you_go."""
    payg = MeteredEntitlement(D(0))
    answer = decide(payg, usage=D(40), quantity=D(5), at=AT)
    assert (answer.decision, answer.reason, answer.overage) == (Verdict.ALLOW, "pay_as_you_go", 40)
    credit = decide(payg, usage=D(2), quantity=D(3), grants=[grant("credit", 5)], at=AT)
    assert (credit.decision, credit.reason, credit.balance) == (Verdict.ALLOW, "within_limit", 3)
    seats = decide_seats(D(7), D(1), D(0), None, None)
    assert (seats.decision, seats.reason) == (Verdict.ALLOW, "pay_as_you_go")
    for flagged in (MeteredEntitlement(D(0), soft_limit=D(0)), MeteredEntitlement(D(0), hard_limit=D(50))):
        assert decide(flagged, usage=D(40), quantity=D(5), at=AT).decision is Verdict.ALLOW_OVERDRAFT


def test_static_entitlement_returns_its_config() -> None:
    result = decide(StaticEntitlement({"max_projects": 10}), at=AT)
    assert (result.decision, result.config) == (Verdict.ALLOW, {"max_projects": 10})


# --- burn-down ----------------------------------------------------------------------------------


def test_burn_order_is_priority_then_expiry_then_age() -> None:
    grants = [
        grant("late-prio", 10, priority=2, expires=20),
        grant("never", 10, priority=1, expires=None),
        grant("later", 10, priority=1, expires=30),
        grant("sooner-new", 10, priority=1, expires=20, created=2),
        grant("sooner-old", 10, priority=1, expires=20, created=1),
    ]
    order = [g.id for g in burn_order(grants)]
    assert order == ["sooner-old", "sooner-new", "later", "never", "late-prio"]


def test_included_units_burn_before_top_ups_that_outlast_the_period() -> None:
    grants = [grant("b", 10, priority=2), grant("a", 10, priority=1, expires=90)]
    result = burn(grants, D(5), D(18), AT, included_until=at_day(31))
    assert (result.included, dict(result.grants), result.uncovered) == (
        D(0),
        {"a": D(0), "b": D(7)},
        D(0),
    )


def test_an_add_on_expiring_before_the_period_end_burns_before_included_units() -> None:
    """A prepaid bundle: the add-on burns first because it expires first."""
    result = burn([grant("add-on", 10, expires=20)], D(100), D(15), AT, included_until=at_day(31))
    assert (result.included, dict(result.grants)) == (D(95), {"add-on": D(0)})


def test_included_units_burn_first_when_they_expire_with_a_grant_of_their_priority() -> None:
    result = burn([grant("bundle", 10, expires=31)], D(10), D(4), AT, included_until=at_day(31))
    assert (result.included, dict(result.grants)) == (D(6), {"bundle": D(10)})


def test_a_grant_of_a_lower_priority_number_burns_before_included_units() -> None:
    result = burn([grant("promo", 10, priority=0)], D(10), D(4), AT, included_until=at_day(31))
    assert (result.included, dict(result.grants)) == (D(10), {"promo": D(6)})


def test_burn_past_everything_reports_uncovered_usage() -> None:
    result = burn([grant("a", 10)], D(5), D(40), AT, included_until=None)
    assert (result.included, dict(result.grants), result.uncovered) == (D(0), {"a": D(0)}, D(25))


def test_ended_grants_forfeit_and_future_grants_are_untouched() -> None:
    grants = [
        grant("expired", 10, expires=15),
        grant("voided", 10, voided=3),
        grant("future", 10, effective=20),
    ]
    result = burn(grants, D(0), D(5), AT, included_until=None)
    assert dict(result.grants) == {"expired": D(0), "voided": D(0), "future": D(10)}
    assert result.uncovered == D(5)


def test_burning_across_an_expiry_in_two_runs_credits_the_expired_grant() -> None:
    """Usage before the expiry burns the expiring grant; usage after it cannot."""
    grants = [grant("promo", 10, expires=10), grant("paid", 10, priority=2)]
    first = burn(grants, D(0), D(6), at_day(9), included_until=None)
    carried = [replace(g, amount=first.grants[g.id]) for g in grants]
    second = burn(carried, first.included, D(6), at_day(12), included_until=None)
    assert dict(second.grants) == {"promo": D(0), "paid": D(4)}


def test_a_grant_starting_mid_period_pays_nothing_of_the_usage_before_it() -> None:
    """An add-on bought after 9 of 10 included units were used holds all of it: only usage
    after it started burns it, though it expires first."""
    add_on = replace(grant("add-on", 3, effective=10, expires=20), usage_at_start=D(9))
    bought = burn([add_on], D(10), D(9), at_day(12), included_until=at_day(31))
    assert (bought.included, dict(bought.grants)) == (D(1), {"add-on": D(3)})
    used = burn([add_on], D(10), D(11), at_day(12), included_until=at_day(31))
    assert (used.included, dict(used.grants)) == (D(1), {"add-on": D(1)})


def test_a_grant_expiring_unused_after_a_mid_period_start_paid_for_nothing() -> None:
    add_on = replace(grant("add-on", 3, effective=10, expires=20), usage_at_start=D(9), usage_at_end=D(9))
    result = burn([add_on], D(10), D(9), at_day(25), included_until=at_day(31))
    assert (result.included, result.paid["add-on"], result.uncovered) == (D(1), D(0), D(0))


def test_usage_nothing_paid_for_before_a_grant_started_burns_it_first() -> None:
    """Overage is owed: a grant starting later pays it before anything new."""
    top_up = replace(grant("top-up", 5, effective=10), usage_at_start=D(8))
    result = burn([top_up], D(6), D(9), at_day(12), included_until=at_day(31))
    assert (result.included, dict(result.grants), result.uncovered) == (D(0), {"top-up": D(2)}, D(0))


def test_a_grant_ending_mid_period_keeps_what_it_paid_before_its_end() -> None:
    promo = replace(grant("promo", 10, expires=10), usage_at_end=D(6))
    result = burn([promo, grant("paid", 10, priority=2)], D(0), D(12), at_day(12), included_until=None)
    assert (dict(result.grants), result.paid["promo"], result.uncovered) == ({"promo": D(0), "paid": D(4)}, D(6), D(0))


period_ends = st.one_of(st.none(), st.integers(1, 45).map(at_day))


@EXAMPLES
@given(grants_(), amounts, amounts, amounts, st.integers(0, 40), period_ends)
def test_burning_in_two_runs_equals_one_run(
    grants: list[Grant], included: Decimal, u1: Decimal, u2: Decimal, day: int, until: datetime | None
) -> None:
    """Computing a period's burn-down in two runs equals one run."""
    at = at_day(day)
    first = burn(grants, included, u1, at, included_until=until)
    carried = [replace(g, amount=first.grants[g.id]) for g in grants]
    second = burn(carried, first.included, u2, at, included_until=until)
    once = burn(grants, included, u1 + u2, at, included_until=until)
    assert (second.included, dict(second.grants)) == (once.included, dict(once.grants))
    assert first.uncovered + second.uncovered == once.uncovered


@EXAMPLES
@given(grants_(), amounts, amounts, st.integers(0, 40), period_ends)
def test_burn_never_goes_negative_and_consumes_what_it_can(
    grants: list[Grant], included: Decimal, usage: Decimal, day: int, until: datetime | None
) -> None:
    """Total consumed is min(usage, included + live grants); nothing goes below zero."""
    at = at_day(day)
    result = burn(grants, included, usage, at, included_until=until)
    available = included + sum((g.amount for g in grants if live(g, at)), D(0))
    left = result.included + sum((result.grants[g.id] for g in grants if live(g, at)), D(0))
    assert result.included >= 0 and all(v >= 0 for v in result.grants.values())
    assert available - left == min(usage, available)
    assert result.uncovered == usage - min(usage, available)


@EXAMPLES
@given(grants_(amount=whole), whole, st.integers(0, 400), st.integers(0, 40), period_ends)
def test_burn_matches_unit_by_unit_reference(
    grants: list[Grant], included: Decimal, usage: int, day: int, until: datetime | None
) -> None:
    """Priority and expiry order equal spending one unit at a time from the best source."""
    at = at_day(day)
    result = burn(grants, included, D(usage), at, included_until=until)
    assert dict(result.grants) | {"": result.included} == naive_burn(grants, included, usage, at, until)


def naive_timed_burn(
    grants: Sequence[Grant], included: Decimal, daily: Sequence[int], included_until: datetime | None
) -> tuple[dict[str, Decimal], Decimal]:
    """Reference: each day's units spend one at a time from the best source live that day;
    a unit nothing could pay stays owed and is paid by the first source live later."""
    included_as_grant = _included_as_grant(included, included_until)
    left = {g.id: g.amount for g in grants} | {"": included}
    owed = 0
    # The last step, at the instant judged, uses nothing new: owed units are paid by what
    # became live then.
    for t, units in [(at_day(day) + timedelta(hours=1), units) for day, units in enumerate(daily)] + [
        (at_day(len(daily)), 0)
    ]:
        wanted, owed = owed + units, 0
        for _ in range(wanted):
            candidates = [g for g in grants if live(g, t) and left[g.id] > 0]
            candidates += [included_as_grant] if left[""] > 0 else []
            if not candidates:
                owed += 1
                continue
            left[_best(candidates).id] -= 1
    at = at_day(len(daily))
    return {g.id: D(0) if untouched(g, at) == 0 else left[g.id] for g in grants} | {"": left[""]}, D(owed)


def marked(grants: Sequence[Grant], daily: Sequence[int]) -> list[Grant]:
    """`grants` with the period's usage at each start and end inside it (days of `daily`)."""
    def used_before(t: datetime) -> Decimal:
        return D(sum(daily[: (t - T0).days]))

    at = at_day(len(daily))
    out = []
    for g in grants:
        ends = [e for e in (g.expires_at, g.voided_at) if e is not None]
        end = min(ends) if ends else None
        start_inside = T0 < g.effective_at <= at
        out.append(replace(
            g,
            usage_at_start=used_before(g.effective_at) if start_inside else None,
            usage_at_end=used_before(end) if end is not None and T0 < end <= at else None,
        ))
    return out


@EXAMPLES
@given(grants_(amount=whole), whole, st.lists(st.integers(0, 12), min_size=1, max_size=40), period_ends)
def test_burn_with_marks_matches_spending_day_by_day(
    grants: list[Grant], included: Decimal, daily: list[int], until: datetime | None
) -> None:
    """Knowing the usage at each instant a grant started or ended in the period, burn-down
    equals spending each day's usage from what was live that day, debts paid first."""
    at = at_day(len(daily))
    result = burn(marked(grants, daily), included, D(sum(daily)), at, included_until=until)
    expected, owed = naive_timed_burn(grants, included, daily, until)
    assert dict(result.grants) | {"": result.included} == expected
    assert result.uncovered == owed


@EXAMPLES
@given(grants_(amount=whole), whole, st.lists(st.integers(0, 12), min_size=1, max_size=40), period_ends)
def test_a_check_sees_the_balance_and_overage_burn_down_leaves(
    grants: list[Grant], included: Decimal, daily: list[int], until: datetime | None
) -> None:
    """Limits raised by live grants and what ended ones paid leave, above the usage, exactly
    what burn-down left unspent, and below it exactly what nothing paid for."""
    at, usage = at_day(len(daily)), D(sum(daily))
    grants = settle(marked(grants, daily), included, at, included_until=until)
    left = burn(grants, included, usage, at, included_until=until)
    seen = decide(MeteredEntitlement(included), usage=usage, grants=grants, at=at)
    unspent = left.included + sum((left.grants[g.id] for g in grants if live(g, at)), D(0))
    assert (seen.balance, seen.overage) == (unspent, left.uncovered)


def test_burn_reads_usage_below_zero_as_none() -> None:
    assert burn([], D(5), D(-1), AT, included_until=None) == burn([], D(5), D(0), AT, included_until=None)


# --- rollover -----------------------------------------------------------------------------------


def test_rollover_clamps_to_min_and_max() -> None:
    grants = [
        grant("capped", 100, max_rollover=20),
        grant("floored", 100, min_rollover=30),
        grant("whole", 100),
        grant("nothing", 100, max_rollover=0),
    ]
    remaining = {"capped": D(70), "floored": D(10), "whole": D(55), "nothing": D(40)}
    assert rollover(grants, remaining, at=AT) == {
        "capped": D(20), "floored": D(30), "whole": D(55), "nothing": D(0)
    }  # fmt: skip


def test_rollover_drops_ended_grants_and_keeps_grants_starting_at_reset() -> None:
    """An expired grant carries nothing; a grant that starts at the reset was never spent."""
    grants = [
        grant("expired", 100, expires=15, min_rollover=10),
        grant("new", 100, effective=15, max_rollover=0),
    ]
    assert rollover(grants, {"expired": D(5), "new": D(100)}, at=AT) == {
        "expired": D(0),
        "new": D(100),
    }


@EXAMPLES
@given(grants_(), st.data())
def test_rollover_stays_within_bounds(grants: list[Grant], data: st.DataObject) -> None:
    """A carried amount lies in [min_rollover, max_rollover] and tops up only to the minimum."""
    bounded = []
    for g in grants:
        low = data.draw(amounts)
        bounded.append(replace(g, min_rollover=low, max_rollover=low + data.draw(amounts)))
    assume(bounded)
    remaining = {g.id: data.draw(amounts) for g in bounded}
    carried = rollover(bounded, remaining, at=AT)
    for g in bounded:
        if live(g, AT) and g.effective_at < AT:
            assert g.max_rollover is not None
            assert g.min_rollover <= carried[g.id] <= g.max_rollover
            assert carried[g.id] <= max(remaining[g.id], g.min_rollover)


# --- grant validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": D(-1)}, "amount"),
        ({"min_rollover": D(5), "max_rollover": D(4)}, "max_rollover"),
        ({"expires_at": T0}, "expires_at"),
    ],
)
def test_invalid_grants_are_rejected_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidEntitlement) as info:
        replace(grant("g", 10), **changes)  # type: ignore[arg-type]
    assert [e.field for e in info.value.errors] == [field]


def test_grant_times_are_stored_in_utc() -> None:
    berlin = datetime(2026, 1, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    g = replace(grant("g", 1), effective_at=berlin, created_at=berlin)
    assert g.effective_at == T0 and g.effective_at.tzinfo is UTC
