"""Small builders shared by tests."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)


def event(subject: str = "user-1", type: str = "prompt", *, id: str | None = None, source: str = "test",
          time: str | None = None, **data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"specversion": "1.0", "id": id or f"evt-{next(_ids)}", "source": source,
                           "type": type, "subject": subject, "data": data}
    if time is not None:
        out["time"] = time
    return out


def meter(key: str = "tokens", aggregation: str = "SUM", *, event_type: str = "prompt",
          value_property: str | None = "$.tokens", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "event_type": event_type, "aggregation": aggregation, **extra}
    if aggregation != "COUNT":
        body["value_property"] = value_property
    return body
