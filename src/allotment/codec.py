"""JSON in and out.

Event data is decoded and stored by msgspec, which keeps integers of any size, so data a vendor
sends is stored and read back exactly as sent. Responses and notification payloads are rendered
by orjson (faster on small documents); a document holding an integer past 64 bits, which orjson
cannot write, is rendered by msgspec instead.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson

DecodeError = msgspec.DecodeError
_encoder = msgspec.json.Encoder(decimal_format="number")
_ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(text: str | bytes) -> Any:
    return msgspec.json.decode(text)


def quantity_number(value: Decimal) -> int | float:
    """Quantities are JSON numbers: integers when integral, else the nearest double."""
    return int(value) if value == value.to_integral_value() else float(value)


def optional_number(value: Decimal | None) -> int | float | None:
    return None if value is None else quantity_number(value)


def render(value: Any) -> bytes:
    """JSON bytes with datetimes in RFC 3339 (UTC as `Z`) and quantities as numbers."""
    try:
        return orjson.dumps(value, default=_quantity, option=_ORJSON_OPTIONS)
    except TypeError:
        return _encoder.encode(value)


def _quantity(value: object) -> int | float:
    if isinstance(value, Decimal):
        return quantity_number(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
