"""JSON in and out.

Event data is decoded and stored by msgspec, which keeps integers of any size, and a fraction
with more significant digits than a double holds exactly is kept as a Decimal, so data a vendor
sends is stored, metered and read back exactly as sent. Responses and notification payloads are rendered
by orjson (faster on small documents); a document holding an integer past 64 bits, which orjson
cannot write, is rendered by msgspec instead.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec
import orjson

DecodeError = msgspec.DecodeError
_encoder = msgspec.json.Encoder(decimal_format="number")
# A JSON fraction of at most 16 characters holds at most 15 significant digits, which any
# double keeps: such numbers (nearly all) skip the exact comparison below.
_SHORT_FLOAT = 16


def json_number(text: str) -> float | Decimal:
    """A JSON fraction as a float when a double holds it exactly, else as a Decimal.

    A number beyond a double's range is refused (ValueError) as no reader can hold it."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("is a number beyond the range of a double")
    if len(text) <= _SHORT_FLOAT or _faithful(value, Decimal(text)):
        return value
    return Decimal(text)


def _faithful(number: float, value: Decimal) -> bool:
    """The double's shortest text names the same number (0.1 does; 1234567890123.456789 does not)."""
    return Decimal(repr(number)) == value


_decoder = msgspec.json.Decoder(float_hook=json_number)
_ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(text: str | bytes) -> Any:
    return _decoder.decode(text)


def quantity_number(value: Decimal) -> int | float | Decimal:
    """Quantities are JSON numbers: integers when integral, else a double when the double's
    text names the same number, else the Decimal itself (written exactly by render())."""
    if value == value.to_integral_value():
        return int(value)
    number = float(value)
    return number if _faithful(number, value) else value


def nearest_number(value: Decimal) -> int | float:
    """As quantity_number, for pydantic schemas, whose JSON has no exact decimal numbers: the
    nearest double where a double would round."""
    number = quantity_number(value)
    return float(number) if isinstance(number, Decimal) else number


def optional_number(value: Decimal | None) -> int | float | Decimal | None:
    return None if value is None else quantity_number(value)


def render(value: Any) -> bytes:
    """JSON bytes with datetimes in RFC 3339 (UTC as `Z`) and quantities as numbers."""
    try:
        return orjson.dumps(value, default=_quantity, option=_ORJSON_OPTIONS)
    except TypeError:
        return _encoder.encode(value)


def _quantity(value: object) -> int | float:
    if isinstance(value, Decimal):
        number = quantity_number(value)
        if isinstance(number, Decimal):
            raise TypeError("a double would round it")  # render() writes it exactly instead
        return number
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
