"""Crossing detection: pure, composable, never reporting a level twice in a period."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.entitlements import notices
from allotment.entitlements.check import units
from allotment.entitlements.crossings import Kind, Threshold, crossings
from allotment.entitlements.engine import MeteredEntitlement, decide
from allotment.notifications import rules

D = Decimal
DEFAULTS = (Threshold("percent", D(50)), Threshold("percent", D(80)), Threshold("percent", D(100)))

amounts = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
positive = st.decimals(min_value=D("0.01"), max_value=500, places=2, allow_nan=False, allow_infinity=False)
thresholds = st.lists(
    st.builds(Threshold, st.sampled_from(["percent", "absolute", "balance"]), positive), max_size=6
)


@st.composite
def limits(draw: st.DrawFn) -> tuple[Decimal, Decimal | None]:
    soft = draw(amounts)
    hard = draw(st.none() | amounts.map(lambda extra: soft + extra))
    return soft, hard


def names(found: list) -> list[str]:  # type: ignore[type-arg]
    return [c.name for c in found]


def test_each_level_in_order_with_overdraft_and_hard_limit():
    """50/80/100 % of 10, overdraft just past 10, the hard limit at 15, lowest first."""
    found = crossings(D(0), D(20), soft=D(10), hard=D(15), thresholds=DEFAULTS)
    assert names(found) == ["50%", "80%", "100%", "overdraft", "hard_limit"]
    assert [c.level for c in found] == [D(5), D(8), D(10), D(10), D(15)]


def test_reaching_a_level_counts_passing_the_soft_limit_is_overdraft():
    """Usage of exactly 10 reaches 100 % but is still within the soft limit."""
    assert names(crossings(D(9), D(10), soft=D(10), hard=None, thresholds=DEFAULTS)) == ["100%"]
    assert names(crossings(D(10), D(11), soft=D(10), hard=None, thresholds=DEFAULTS)) == ["overdraft"]


def test_absolute_thresholds_and_no_percent_of_nothing():
    found = crossings(D(0), D(3), soft=D(0), hard=D(5), thresholds=(Threshold("absolute", D(2)), *DEFAULTS))
    assert names(found) == ["overdraft", "2"]


def test_a_balance_threshold_is_reached_when_what_is_left_falls_to_it():
    """5 left of a soft limit of 50 is usage 45; of a limit of 5 or less it is never reached."""
    five_left = Threshold("balance", D(5))
    assert [(c.name, c.level) for c in crossings(D(40), D(46), soft=D(50), hard=None, thresholds=[five_left])] \
        == [("5 left", D(45))]
    assert crossings(D(0), D(3), soft=D(5), hard=None, thresholds=[five_left]) == []


def test_usage_that_does_not_grow_crosses_nothing():
    assert crossings(D(8), D(8), soft=D(10), hard=D(15), thresholds=DEFAULTS) == []
    assert crossings(D(12), D(3), soft=D(10), hard=D(15), thresholds=DEFAULTS) == []


@given(amounts, amounts, amounts, limits(), thresholds)
def test_consuming_in_two_steps_crosses_what_one_step_crosses(start, u1, u2, lim, ts):
    """Consuming u1 then u2 reports exactly what consuming u1 + u2 at once reports."""
    soft, hard = lim
    first = crossings(start, start + u1, soft=soft, hard=hard, thresholds=ts)
    second = crossings(start + u1, start + u1 + u2, soft=soft, hard=hard, thresholds=ts)
    at_once = crossings(start, start + u1 + u2, soft=soft, hard=hard, thresholds=ts)
    assert first + second == at_once


@given(st.lists(amounts, max_size=30), limits(), thresholds)
def test_never_reports_a_level_twice_in_a_period(steps, lim, ts):
    soft, hard = lim
    used, seen = D(0), []
    for step in steps:
        seen += names(crossings(used, used + step, soft=soft, hard=hard, thresholds=ts))
        used += step
    assert len(seen) == len(set(seen))


@given(amounts, amounts, limits(), thresholds)
def test_matches_a_naive_reference(before, delta, lim, ts):
    """Each level in (before, after] is reported; overdraft when the soft limit is in [before, after)."""
    soft, hard = lim
    after = before + delta
    want = set()
    if after > before:
        for t in ts:
            if t.type == "percent":
                level, meaningful = soft * t.value / 100, soft > 0
            elif t.type == "balance":  # what is left below the soft limit falls to the value
                level, meaningful = soft - t.value, soft > t.value
            else:
                level, meaningful = t.value, True
            if meaningful and before < level <= after:
                want.add(t.label)
        if before <= soft < after:
            want.add("overdraft")
        if hard is not None and before < hard <= after:
            want.add("hard_limit")
    found = crossings(before, after, soft=soft, hard=hard, thresholds=ts)
    assert set(names(found)) == want
    assert [c.level for c in found] == sorted(c.level for c in found)
    assert all(c.kind is Kind.THRESHOLD for c in found if c.threshold is not None)


# --- the same question asked of a counter not read yet (group_commit's quiet statement) ----------

_TENANT = "ten_quiet_levels_property"
_millionths = st.integers(min_value=0, max_value=1_000 * 1_000_000)


def _tells_alike(soft: Decimal, hard: Decimal | None, chosen: list[Threshold], before: int, quantity: int) -> None:
    rules._cache[_TENANT] = (time.monotonic() + 60, rules.TenantRules(
        thresholds_configured=True, threshold_rules=(rules._Applies(None, tuple(chosen), None),),
        expiring_configured=False, expiring_rules=()))
    try:
        where = notices.Where(_TENANT, "ent_1", "cus_1", "fea_1", datetime(2026, 1, 1, tzinfo=UTC), None)
        ent = MeteredEntitlement(included=soft, soft_limit=soft, hard_limit=hard)
        after = decide(ent, usage=units(before + quantity), quantity=units(quantity), at=where.period_start)
        told = notices.would_tell(where, before=units(before), after=after)
        levels, quiet = notices.quiet_levels(where, ent)
        assert quiet
        by_levels = levels is not None and (before == 0 or any(before < level <= before + quantity for level in levels))
        assert by_levels == told, (soft, hard, chosen, before, quantity)
    finally:
        rules._cache.pop(_TENANT, None)


def test_quiet_levels_tell_exactly_when_would_tell_does_at_every_edge():
    """Moves that start or end on a limit, a threshold or one millionth beside them."""
    chosen = [Threshold("percent", D(80)), Threshold("absolute", D("2.5")), Threshold("percent", D("33.3333333"))]
    for soft, hard in ((D(10), None), (D(10), D(15)), (D(0), D(3)), (D(0), None)):
        edges = [e + d for e in (0, 2_500_000, 3_333_333, 8_000_000, int(soft * 1_000_000), int((hard or soft) * 1_000_000))
                 for d in (-1, 0, 1) if e + d >= 0]
        for before in edges:
            for end in edges:
                if end > before:
                    _tells_alike(soft, hard, chosen, before, end - before)


@settings(max_examples=300)
@given(limits(), thresholds, _millionths, st.integers(min_value=1, max_value=300 * 1_000_000))
def test_quiet_levels_tell_exactly_when_would_tell_does(bounds, chosen, before, quantity):
    """A move of `used` from b to b + q tells by the levels iff `would_tell` says it tells."""
    _tells_alike(*bounds, chosen, before, quantity)
