"""Pure aggregation: exact quantities, and cells that merge like one run over all events."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.metering.reference import Sent, aggregate

from allotment.metering.aggregation import (
    MAX_ABS_MICROS,
    Aggregation,
    Cell,
    CompiledMeter,
    from_micros,
    parse_group_key,
    result,
    to_micros,
)

BOUND = Decimal(MAX_ABS_MICROS) / 1_000_000
quantities = st.decimals(-BOUND, BOUND, places=6, allow_nan=False, allow_infinity=False)
micros = st.integers(-(10**15), 10**15)
# (micros, time): times from a small range so that ties on time are common.
values_at = st.lists(st.tuples(micros, st.integers(0, 20)), max_size=30)


def one_run(values: list[tuple[int, int]]) -> Cell:
    cell = Cell()
    for value, at in values:
        cell.add(value, at)
    return cell


@given(quantities)
def test_to_micros_is_exact_to_six_decimals(number: Decimal) -> None:
    """A quantity with up to 6 decimals converts exactly, from a Decimal or its text."""
    assert to_micros(number) == to_micros(str(number)) == number * 1_000_000
    assert from_micros(to_micros(number)) == number


@given(st.decimals(-(10**6), 10**6, places=6, allow_nan=False, allow_infinity=False))
def test_to_micros_takes_json_floats_as_written(number: Decimal) -> None:
    """A JSON number parsed as a float converts to the decimal it was written as."""
    assert to_micros(float(str(number))) == number * 1_000_000


@given(quantities.filter(lambda d: abs(d) < BOUND - 1), st.integers(1, 9))
def test_to_micros_rejects_a_seventh_decimal(number: Decimal, seventh: int) -> None:
    """Anything that rounding to millionths would change is refused, not rounded."""
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        to_micros(number + Decimal(seventh).scaleb(-7))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1.0000000000000000000000000001", "more than 6 decimal places"),  # 29 digits
        ("1E-999999999", "more than 6 decimal places"),
        ("1E+999999", "too large"),
        ("1E+999999999", "too large"),
        (str(MAX_ABS_MICROS + 1) + "E-6", "too large"),
    ],
)
def test_to_micros_refuses_what_decimal_arithmetic_would_round(value: str, reason: str) -> None:
    """Long, tiny and huge numerals are refused rather than rounded, flushed or overflowed."""
    with pytest.raises(ValueError, match=reason):
        to_micros(value)


@pytest.mark.parametrize(
    "value", [True, False, None, [], {}, "abc", "", float("nan"), float("inf"), "NaN", "-Infinity", "sNaN"]
)
def test_to_micros_refuses_non_numbers(value: object) -> None:
    """Booleans, NaN, infinities and non-numeric values are not quantities."""
    with pytest.raises(ValueError, match="must be a"):
        to_micros(value)


def test_to_micros_keeps_the_largest_allowed_value() -> None:
    assert to_micros(str(MAX_ABS_MICROS) + "E-6") == MAX_ABS_MICROS
    assert to_micros("-0.000000") == 0


@given(values_at, st.data())
def test_two_parts_merged_equal_one_run(values: list[tuple[int, int]], data: st.DataObject) -> None:
    """Folding a prefix and the rest separately, then merging, equals folding everything."""
    cut = data.draw(st.integers(0, len(values)))
    first, rest = one_run(values[:cut]), one_run(values[cut:])
    first.merge(rest)
    assert first == one_run(values)


@given(values_at, st.data())
def test_merging_is_associative(values: list[tuple[int, int]], data: st.DataObject) -> None:
    """(a + b) + c equals a + (b + c) for consecutive parts of one stream."""
    i = data.draw(st.integers(0, len(values)))
    j = data.draw(st.integers(i, len(values)))
    a, b, c = (one_run(part) for part in (values[:i], values[i:j], values[j:]))
    left, right = one_run(values[:i]), one_run(values[i:j])
    left.merge(b)
    left.merge(c)
    right.merge(c)
    a.merge(right)
    assert left == a


@given(values_at)
def test_cell_matches_the_naive_reference(values: list[tuple[int, int]]) -> None:
    """Each aggregation's result equals a plain computation over the values in arrival order."""
    cell = one_run(values)
    sent = [Sent(str(i), "s", None, at, Decimal(v) / 1_000_000) for i, (v, at) in enumerate(values)]
    for aggregation in Aggregation:
        if aggregation is Aggregation.UNIQUE_COUNT:
            continue
        got, want = result(aggregation, cell, None), aggregate(aggregation.value, sent)
        if aggregation is Aggregation.AVG and want is not None:
            assert got is not None
            assert abs(Fraction(got) - Fraction(want)) <= abs(Fraction(want)) * Fraction(1, 10**25)
        else:
            assert got == want


@given(values_at, micros)
def test_merging_a_cell_without_extremes_keeps_the_others(values: list[tuple[int, int]], total: int) -> None:
    """A cell read back for SUM carries no min or max; merging it in either order is safe."""
    partial = Cell(n=1, total=total)
    full = one_run(values)
    full.merge(partial)
    partial.merge(one_run(values))
    assert full.lo == partial.lo == one_run(values).lo
    assert full.hi == partial.hi == one_run(values).hi


def test_unique_count_counts_distinct_tokens() -> None:
    assert result(Aggregation.UNIQUE_COUNT, Cell(), {"a", "b"}) == 2
    assert result(Aggregation.UNIQUE_COUNT, Cell(), None) == 0


def _flag_meter(op: str, value: object) -> CompiledMeter:
    return CompiledMeter.build(
        id="m", key="m", event_type="t", aggregation="COUNT", value_property=None, group_by={},
        filters=[{"property": "$.flag", "op": op, "value": value}],
    )


@pytest.mark.parametrize(
    ("op", "value", "flag", "counted"),
    [
        ("eq", True, 1, False),
        ("eq", 1, True, False),
        ("eq", True, True, True),
        ("eq", 1, 1.0, True),
        ("ne", False, 0, True),
        ("in", [True], 1, False),
        ("not_in", [0], False, True),
    ],
)
def test_filters_compare_like_json(op: str, value: object, flag: object, counted: bool) -> None:
    """A filter on `true` does not count events whose value is `1` (nor the reverse)."""
    assert (_flag_meter(op, value).contribution({"flag": flag}, 0) is not None) is counted


group_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([0.0, -0.0, 1.0, 1.5]),
                         st.sampled_from(["a", "b", "é", "0", "false"]), st.lists(st.integers(0, 2), max_size=2))


@given(st.integers(0, 5), st.data())
def test_group_keys_name_every_group_by_value(count: int, data: st.DataObject) -> None:
    """Whatever the number of group-by properties, top-level or nested, present or missing,
    an event's group key holds each value as sent (text as is, anything else as JSON, missing
    as null), also after an equal Python value of another JSON type (0, 0.0, -0.0, false)."""
    paths = {f"g{i}": f"$.g{i}" if i % 2 == 0 else f"$.nest.g{i}" for i in range(count)}
    meter = CompiledMeter.build(id="m", key="m", event_type="t", aggregation="COUNT", value_property=None,
                                group_by=paths, filters=[])
    for _ in range(3):  # group keys are remembered: a repeat must give the same answer
        event: dict[str, object] = {"nest": {}}
        expected: dict[str, str | None] = {}
        for i in range(count):
            name = f"g{i}"
            value = data.draw(group_values | st.just(KeyError), label=name)
            if value is not KeyError:
                (event if i % 2 == 0 else event["nest"])[name] = value  # type: ignore[index]
            expected[name] = (None if value is KeyError or value is None
                              else value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        contribution = meter.contribution(event, 0)
        assert contribution is not None
        assert (parse_group_key(contribution.group_key), contribution.micros) == (expected, 1_000_000)


@given(micros, st.integers(0, 20))
def test_a_first_cell_equals_one_added_value(value: int, at: int) -> None:
    assert Cell.first(value, at) == one_run([(value, at)])
