"""A JSON response rendered by orjson (datetimes as RFC 3339, fast on hot paths)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from starlette.responses import JSONResponse


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
        except TypeError:
            # orjson stops at 64-bit integers; event data may hold any JSON number, shown as sent.
            return msgspec.json.encode(content)
