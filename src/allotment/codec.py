"""JSON for event data: msgspec keeps integers of any size (orjson stops at 64 bits), so data a
vendor sends is stored and read back exactly as sent."""

from __future__ import annotations

from typing import Any

import msgspec

DecodeError = msgspec.DecodeError
_encoder = msgspec.json.Encoder(decimal_format="number")


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(text: str | bytes) -> Any:
    return msgspec.json.decode(text)
