"""Pure aggregation: how one meter turns event data into rollup contributions.

No I/O and no clock. Quantities are exact: they travel as integers of millionths ("micros"),
which both SQLite and PostgreSQL add without rounding.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from allotment import codec
from allotment.metering.bounded import distinct_form, group_value_budget, group_value_form
from allotment.metering.jsonpath import MISSING, Getter, compile_path

SCALE = 1_000_000
MAX_ABS_MICROS = 2**62  # leaves headroom below int64 for sums of many values
MAX_WHOLE = MAX_ABS_MICROS // SCALE
MICRO = Decimal("0.000001")


class Aggregation(enum.StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    MIN = "MIN"
    MAX = "MAX"
    AVG = "AVG"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    LATEST = "LATEST"

    @property
    def needs_value(self) -> bool:
        return self is not Aggregation.COUNT


class DataError(ValueError):
    """An event's data cannot feed a meter; `field` names the property."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def to_micros(value: Any) -> int:
    """A JSON number or numeric string -> exact millionths; rejects what would be rounded."""
    if type(value) is int and -MAX_WHOLE <= value <= MAX_WHOLE:
        return value * SCALE  # the common case (counts, tokens, bytes), without Decimal
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("must be a number")  # noqa: TRY004 (callers report ValueErrors per event)
    try:
        number = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except InvalidOperation:
        raise ValueError("must be a number") from None
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number.is_zero():
        return 0
    # Bound the magnitude before any arithmetic: Decimal rounds to its context's precision,
    # flushes tiny exponents to zero and overflows on huge ones. Below 10**19, quantizing to
    # millionths needs at most 25 digits, within any precision Allotment runs with, so it is exact.
    if number.adjusted() > 18:
        raise ValueError("is too large")
    quantized = number.quantize(MICRO)
    if quantized != number:
        raise ValueError("has more than 6 decimal places")
    micros = int(quantized.scaleb(6))
    if abs(micros) > MAX_ABS_MICROS:
        raise ValueError("is too large")
    return micros


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / SCALE).normalize() if micros else Decimal(0)


def distinct_token(value: Any) -> str:
    """The identity of a UNIQUE_COUNT value: strings as they are, anything else as JSON, in
    its bounded form when long (bounded.py)."""
    return distinct_form(value if isinstance(value, str) else codec.dumps(value))


@dataclass(frozen=True)
class Filter:
    property: str
    op: str
    value: Any
    getter: Getter = field(compare=False)

    def matches(self, data: Any) -> bool:
        found = self.getter(data)
        if self.op == "exists":
            return (found is not MISSING) == bool(self.value)
        if found is MISSING:
            return self.op in ("ne", "not_in")
        if self.op == "eq":
            return _same(found, self.value)
        if self.op == "ne":
            return not _same(found, self.value)
        if self.op == "in":
            return any(_same(found, v) for v in self.value)
        return not any(_same(found, v) for v in self.value)  # not_in


def _same(a: Any, b: Any) -> bool:
    """JSON equality of scalars: `true` is not `1` (a Python bool is an int)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)




class Contribution(NamedTuple):
    """What one event adds to one meter: a group and a value (micros, or a distinct token).

    A tuple: ingest makes one per event and meter, and a frozen dataclass costs several
    times as much to build."""

    group_key: str
    micros: int
    token: str | None


@dataclass
class CompiledMeter:
    id: str
    key: str
    event_type: str
    aggregation: Aggregation
    value_property: str | None
    group_names: list[str]
    _value: Getter | None
    _groups: list[Getter]
    _filters: list[Filter]
    event_from_us: int | None = None  # events before it are not the meter's
    # Group values repeat (a few models, regions...): their encoded key is computed once.
    _group_keys: dict[tuple[tuple[Any, ...], tuple[type, ...]], str] = field(default_factory=dict)
    _group_values: Callable[[Any], tuple[Any, ...]] | None = None
    # What every event adds to a COUNT without filters or groups: the same value each time.
    _constant: Contribution | None = None
    _value_budget: int = 0  # bytes of JSON each group value may take in a group key

    def __post_init__(self) -> None:
        self._group_values = _values_of(self._groups)
        self._value_budget = group_value_budget(self.group_names)
        if self.aggregation is Aggregation.COUNT and not self._filters and not self._groups:
            self._constant = Contribution("", SCALE, None)

    @classmethod
    def build(
        cls,
        *,
        id: str,
        key: str,
        event_type: str,
        aggregation: str,
        value_property: str | None,
        group_by: dict[str, str],
        filters: list[dict[str, Any]],
        event_from_us: int | None = None,
    ) -> CompiledMeter:
        names = sorted(group_by)
        return cls(
            id=id,
            key=key,
            event_type=event_type,
            aggregation=Aggregation(aggregation),
            value_property=value_property,
            group_names=names,
            _value=compile_path(value_property) if value_property else None,
            _groups=[compile_path(group_by[name]) for name in names],
            _filters=[
                Filter(f["property"], f["op"], f.get("value"), compile_path(f["property"]))
                for f in filters
            ],
            event_from_us=event_from_us,
        )

    def contribution(self, data: dict[str, Any], time_us: int) -> Contribution | None:
        """None when the event is before `event_from_us` or the meter's filters exclude it;
        raises DataError on bad data (of an event the meter would count)."""
        if self.event_from_us is not None and time_us < self.event_from_us:
            return None
        if self._constant is not None:
            return self._constant
        for flt in self._filters:
            if not flt.matches(data):
                return None
        group_key = self.group_key(data)
        if self.aggregation is Aggregation.COUNT:
            return Contribution(group_key, SCALE, None)
        assert self._value is not None
        raw = self._value(data)
        if raw is MISSING or raw is None:
            raise DataError(self._where(), f"is required by meter '{self.key}'")
        if self.aggregation is Aggregation.UNIQUE_COUNT:
            if isinstance(raw, dict | list):
                raise DataError(self._where(), f"must be a scalar for meter '{self.key}'")
            if isinstance(raw, str) and "\x00" in raw:  # stored as text: PostgreSQL refuses NUL
                raise DataError(self._where(), f"must not contain the NUL character (\\u0000) (meter '{self.key}')")
            return Contribution(group_key, SCALE, distinct_token(raw))
        try:
            return Contribution(group_key, to_micros(raw), None)
        except ValueError as exc:
            raise DataError(self._where(), f"{exc} (meter '{self.key}')") from None

    def _where(self) -> str:
        """The field an error names: the value property, under `data`."""
        assert self.value_property is not None
        return "data" + self.value_property[1:]

    def group_key(self, data: dict[str, Any]) -> str:
        if self._group_values is None:
            return ""
        found = self._group_values(data)
        # Remembered by value and type: 0, 0.0 and false are equal keys in Python but
        # different JSON ("0", "0.0", "false"). Floats are not remembered: 0.0 == -0.0.
        kinds = tuple(map(type, found))
        if float in kinds:
            return self._encode_group(found)
        memo = (found, kinds)
        try:
            return self._group_keys[memo]
        except KeyError:
            pass
        except TypeError:  # an unhashable value (object, array): no memo
            return self._encode_group(found)
        key = self._group_keys[memo] = self._encode_group(found)
        if len(self._group_keys) > _GROUP_MEMO:
            self._group_keys.clear()
        return key

    def _encode_group(self, found: tuple[Any, ...]) -> str:
        values = {
            name: None if value is MISSING or value is None else self.group_value_form(_group_text(value))
            for name, value in zip(self.group_names, found, strict=True)
        }
        return codec.dumps(values)

    def group_value_form(self, text: str) -> str:
        """How this meter's group keys hold a group value's text: as it is, or bounded when
        long (bounded.py). Filters on group values map what they are given the same way."""
        return group_value_form(text, self._value_budget)


_GROUP_MEMO = 100_000


def _values_of(getters: list[Getter]) -> Callable[[Any], tuple[Any, ...]] | None:
    """One function reading every group-by value of an event (None: the meter has none).
    Most meters group by one to three properties: those read them without a loop."""
    if not getters:
        return None
    if len(getters) == 1:
        (first,) = getters
        return lambda data: (first(data),)
    if len(getters) == 2:
        first, second = getters
        return lambda data: (first(data), second(data))
    if len(getters) == 3:
        first, second, third = getters
        return lambda data: (first(data), second(data), third(data))
    return lambda data: tuple([getter(data) for getter in getters])


def _group_text(value: Any) -> str:
    return value if isinstance(value, str) else codec.dumps(value)


def parse_group_key(group_key: str) -> dict[str, str | None]:
    return codec.loads(group_key) if group_key else {}


@dataclass(slots=True)
class Cell:
    """A rollup cell: count, sum, min, max and the latest value (by time, then arrival)."""

    n: int = 0
    total: int = 0
    lo: int | None = None
    hi: int | None = None
    last_value: int | None = None
    last_us: int | None = None

    @classmethod
    def first(cls, micros: int, at_us: int) -> Cell:
        """A cell holding one value: `Cell()` then `add`, in one step."""
        return cls(1, micros, micros, micros, micros, at_us)

    def add(self, micros: int, at_us: int) -> None:
        self.n += 1
        self.total += micros
        self.lo = micros if self.lo is None else min(self.lo, micros)
        self.hi = micros if self.hi is None else max(self.hi, micros)
        if self.last_us is None or at_us >= self.last_us:
            self.last_us, self.last_value = at_us, micros

    def merge(self, other: Cell) -> None:
        """Fold a later-arriving cell into this one (ties on time go to `other`)."""
        self.absorb(other.n, other.total, other.lo, other.hi, other.last_value, other.last_us)

    def absorb(
        self, n: int, total: int, lo: int | None, hi: int | None, last_value: int | None,
        last_us: int | None,
    ) -> None:
        """`merge` of a later-arriving cell given as its values (as the journal holds them)."""
        if n == 0:
            return
        self.n += n
        self.total += total
        # Cells read back for one aggregation carry only its measure (no lo for SUM, no hi for
        # MIN), so either side may lack an extreme.
        if lo is not None and (self.lo is None or lo < self.lo):
            self.lo = lo
        if hi is not None and (self.hi is None or hi > self.hi):
            self.hi = hi
        if last_us is not None and (self.last_us is None or last_us >= self.last_us):
            self.last_us, self.last_value = last_us, last_value


def result(aggregation: Aggregation, cell: Cell, distinct: set[str] | None) -> Decimal | None:
    """The meter's value for a window, from its merged cell (None: no data where that matters)."""
    if aggregation is Aggregation.COUNT:
        return Decimal(cell.n)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return Decimal(len(distinct or ()))
    if aggregation is Aggregation.SUM:
        return from_micros(cell.total)
    if cell.n == 0:
        return None
    if aggregation is Aggregation.AVG:
        return (Decimal(cell.total) / cell.n / SCALE).normalize()
    picked = {
        Aggregation.MIN: cell.lo,
        Aggregation.MAX: cell.hi,
        Aggregation.LATEST: cell.last_value,
    }[aggregation]
    return None if picked is None else from_micros(picked)
