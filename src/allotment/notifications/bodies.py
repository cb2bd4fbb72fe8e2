"""What a webhook's body says: the native form, or OpenMeter's for channels made through its API.

Every body is `{"id", "type", "timestamp", "data"}`. The native form carries the type and the
payload as emitted. OpenMeter's form (docs/openmeter-notifications.md) renames the types its
rules know and reshapes `data` as OpenMeter's events do; other types keep the native form.
Both are pure functions of the stored notification, so a redelivery sends the same bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from allotment import codec
from allotment.notifications.schemas import PERIOD_RESET, THRESHOLD_REACHED

NATIVE, OPENMETER = "native", "openmeter"
FORMATS = (NATIVE, OPENMETER)

BALANCE_THRESHOLD = "entitlements.balance.threshold"
RESET = "entitlements.reset"
OPENMETER_TYPE = {THRESHOLD_REACHED: BALANCE_THRESHOLD, PERIOD_RESET: RESET}
THRESHOLD_NAME = {"percent": "PERCENT", "absolute": "NUMBER", "balance": "balance_value"}


def body(body_format: str, message_id: str, type_: str, created_at: datetime, payload: str) -> bytes:
    """The bytes sent for one message; `payload` is the stored JSON text."""
    if body_format == OPENMETER and type_ in OPENMETER_TYPE:
        om_type = OPENMETER_TYPE[type_]
        return _envelope(message_id, om_type, created_at, codec.render(
            openmeter_data(codec.loads(payload), om_type)).decode())
    return _envelope(message_id, type_, created_at, payload)


def _envelope(message_id: str, type_: str, created_at: datetime, data: str) -> bytes:
    head = orjson.dumps({"id": message_id, "type": type_, "timestamp": created_at},
                        option=orjson.OPT_UTC_Z)
    return head[:-1] + b',"data":' + data.encode() + b"}"


def openmeter_data(p: dict[str, Any], om_type: str) -> dict[str, Any]:
    """OpenMeter's event data, from what the notification carries.

    Rule tests carry no usage: their data is the test's own payload."""
    if "feature" not in p or "customer" not in p:
        return p
    customer, feature = p["customer"], p["feature"]
    usage, soft, hard = p.get("usage"), p.get("soft_limit"), p.get("hard_limit")
    overage = max(usage - soft, 0) if usage is not None and soft is not None else 0
    data: dict[str, Any] = {
        "entitlement": {
            "id": p.get("entitlement_id"), "type": "metered", "featureId": feature["id"],
            "featureKey": feature["key"], "subjectKey": customer["key"],
            "currentUsagePeriod": {"from": p.get("period_start"), "to": p.get("period_end")},
        },
        # Notifications stored before payloads carried the name have only the key to show.
        "feature": {"id": feature["id"], "key": feature["key"], "name": feature.get("name") or feature["key"]},
        "subject": {"key": customer["key"]},
        "customer": {"id": customer["id"], "key": customer["key"]},
        "value": {"balance": p.get("balance"), "usage": usage, "overage": overage,
                  "hasAccess": hard is None or usage is None or usage < hard},
    }
    threshold = p.get("threshold")
    if om_type == BALANCE_THRESHOLD and isinstance(threshold, dict):
        data["threshold"] = {"value": threshold["value"], "type": THRESHOLD_NAME[threshold["type"]]}
    return data
