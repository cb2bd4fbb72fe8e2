"""Small shared value helpers: opaque ids, UTC time, and the quantities and times the API takes in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema
from ulid import ULID


def new_id(prefix: str) -> str:
    """A stable, opaque, time-sortable id such as `cus_01JD...`."""
    return f"{prefix}_{str(ULID()).lower()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_micros(at: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (how event times are stored)."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def as_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: a time zone offset is required")
    return at.astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Every time the product takes in lies here, so that windows, periods and expiries computed
# from it (in any time zone) stay within what a datetime can hold.
EARLIEST = EPOCH
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "must be from 1970-01-01T00:00:00Z and before 9000-01-01T00:00:00Z"


def within_range(at: datetime) -> bool:
    """Whether `at` lies in [EARLIEST, LATEST); naive means UTC. Compared, not converted:
    converting 9999-12-31T23:59:59-14:00 to UTC would overflow."""
    return EARLIEST <= (at.replace(tzinfo=UTC) if at.tzinfo is None else at) < LATEST


def in_range(at: datetime) -> datetime:
    """`at` unchanged when it is within range; a ValueError saying the range when not."""
    if not within_range(at):
        raise ValueError(OUT_OF_RANGE)
    return at


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_NOT_A_DATE_TIME = "must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z"


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("may not be null: leave the field out to keep its value")
    return value


# On an update, a field the resource always has: left out, it keeps its value; an explicit
# null is refused naming it (ignoring it would answer 200 for a change that was not made).
NotNull = AfterValidator(_not_null)


# ISO 4217 currencies whose minor unit is not the cent; every other currency has two decimals.
_MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                     "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4, "UYW": 4,
}


def money(amount: Decimal, currency: str | None) -> Decimal:
    """`amount` written with at least the currency's minor units ("2.5" EUR -> "2.50", "1000"
    JPY stays "1000"); never rounded: a per-unit price finer than a cent keeps its digits."""
    places = _MINOR_UNITS.get(currency or "", 2)
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent >= places:
        return amount
    return amount.quantize(Decimal(1).scaleb(-places))


def _date_time_text(value: object) -> object:
    """Times come in as RFC 3339 text, as documented. Pydantic would also read a number (or
    a numeric string) as seconds since the epoch, so a stray `0.5` would mean 1970."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(_NOT_A_DATE_TIME)
    return value


Instant = Annotated[datetime, BeforeValidator(_date_time_text), AfterValidator(in_range)]
# Stored and returned in UTC (API.md): an offset given on the way in is converted at once, so
# that no answer echoes it (an ORM row keeps what it was given until it is read again).
AwareInstant = Annotated[AwareDatetime, BeforeValidator(_date_time_text), AfterValidator(in_range),
                         AfterValidator(as_utc)]


# --- quantities in ---------------------------------------------------------------------------
# A quantity comes in as a JSON number or as text in plain decimal notation (digits, at most
# six after the point: counters hold millionths). The schema states exactly which texts are
# taken, so that a client generated from it never sends one the API refuses.

_PLACES = 6
_DECIMAL_TEXT = re.compile(r"([0-9]+(\.[0-9]{1,6})?|\.[0-9]{1,6})")
_NOT_A_QUANTITY = 'must be a number, or text such as "12.5" (digits, at most 6 after the point)'


def _quantity_text(value: object) -> object:
    """Numbers go on to the range checks; text only in plain decimal notation; never a bool."""
    if isinstance(value, bool) or (isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value)):
        raise ValueError(_NOT_A_QUANTITY)
    return value


def _quantity_schema(below: int, *, positive: bool) -> dict[str, Any]:
    """What a quantity below 10^`below` takes, as JSON Schema: the number's range and the
    text's pattern."""
    fraction = rf"(\.[0-9]{{1,{_PLACES}}})?"
    if positive:  # a non-zero digit somewhere, without lookahead (not every generator has it)
        small = "|".join(f"{'0' * k}[1-9][0-9]{{0,{_PLACES - 1 - k}}}" for k in range(_PLACES))
        pattern = rf"^(0*[1-9][0-9]{{0,{below - 1}}}{fraction}|0*\.({small}))$"
        low = {"exclusiveMinimum": 0}
    else:
        pattern = rf"^(0*[0-9]{{1,{below}}}{fraction}|\.[0-9]{{1,{_PLACES}}})$"
        low = {"minimum": 0}
    return {"anyOf": [{"type": "number", **low, "exclusiveMaximum": 10**below},
                      {"type": "string", "pattern": pattern}]}


_IN = BeforeValidator(_quantity_text)
_EXACT: dict[str, Any] = {"decimal_places": _PLACES, "allow_inf_nan": False}
# Checks, holds, grants and thresholds stay below 10^12 units, so that a counter (in
# millionths) stays within 64 bits; plan values may use all 32 integer digits NUMERIC(38, 6) has.
PositiveQuantity = Annotated[Decimal, _IN, Field(gt=0, lt=Decimal(10) ** 12, **_EXACT),
                             WithJsonSchema(_quantity_schema(12, positive=True), mode="validation")]
Quantity = Annotated[Decimal, _IN, Field(ge=0, lt=Decimal(10) ** 12, **_EXACT),
                     WithJsonSchema(_quantity_schema(12, positive=False), mode="validation")]
LargeQuantity = Annotated[Decimal, _IN, Field(ge=0, lt=Decimal(10) ** 32, **_EXACT),
                          WithJsonSchema(_quantity_schema(32, positive=False), mode="validation")]


# --- metadata in ------------------------------------------------------------------------------
# Vendors' free-form key-values, kept with the row and returned with every read of it: bounded,
# so that one request cannot make every later read of a list heavy.

MAX_METADATA_CHARACTERS = 16_384


def _metadata_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # Characters, not bytes: text may hold lone surrogates, which no UTF-8 encoder takes.
    if value is not None and len(json.dumps(value, ensure_ascii=False)) > MAX_METADATA_CHARACTERS:
        raise ValueError(f"must be at most {MAX_METADATA_CHARACTERS} characters as JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_metadata_size)]
# Text to text, as OpenMeter's metadata (its server refuses any other value, and so do we,
# naming it), under the same bound.
TextMetadata = Annotated[dict[str, str], AfterValidator(_metadata_size)]
