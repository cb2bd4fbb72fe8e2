"""OpenMeter's notification shapes (channels, rules, events) and their mapping to ours.

A channel is a webhook endpoint that takes only what rules naming it send (`rules_only`);
a rule is a notification rule that names endpoints; an event is a notification, with its
deliveries as the delivery status per channel. Names: channel `name` is the endpoint's
description, `signingSecret` its secret, `customHeaders` its headers; rule `channels` are the
rule's endpoint ids, `disabled` is `not enabled`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from allotment import codec
from allotment.errors import ValidationFailed
from allotment.notifications.bodies import (
    BALANCE_THRESHOLD,
    OPENMETER_TYPE,
    THRESHOLD_NAME,
    openmeter_data,
)
from allotment.notifications.history import DeliveryView
from allotment.notifications.models import (
    DEAD,
    DELIVERED,
    Notification,
    NotificationRule,
    WebhookEndpoint,
)
from allotment.notifications.schemas import GRANT_EXPIRING, REDACTED, THRESHOLD_REACHED

# OpenMeter rule and event types, and the native types they are.
NATIVE_TYPE = {om: native for native, om in OPENMETER_TYPE.items()}
_UNSUPPORTED_TYPES = ("invoice.created", "invoice.updated")
assert GRANT_EXPIRING not in OPENMETER_TYPE  # a grant lead time has no OpenMeter rule

# What native names are called in OpenMeter requests, for the errors' `field`.
CHANNEL_FIELDS = {"description": "name", "secret": "signingSecret", "headers": "customHeaders"}
RULE_FIELDS = {"endpoint_ids": "channels", "event_type": "type", "enabled": "disabled"}

# Thresholds by OpenMeter's current and legacy names: usage, or the balance left.
_THRESHOLD_KIND = {
    "PERCENT": "percent", "usage_percentage": "percent",
    "NUMBER": "absolute", "usage_value": "absolute",
    "balance_value": "balance",
}


class _In(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ChannelIn(_In):
    """Create and replace-update: the same shape, as in OpenMeter."""

    type: Literal["WEBHOOK"]
    name: str = Field(min_length=1, max_length=1024)
    url: str
    disabled: StrictBool = False
    metadata: dict[str, str] | None = None  # accepted, not kept
    custom_headers: dict[str, str] | None = None
    signing_secret: str | None = None


class ThresholdIn(_In):
    value: Decimal = Field(allow_inf_nan=False)
    type: str


class RuleIn(_In):
    """Create and replace-update of every rule type; what a type does not have is refused."""

    type: str
    name: str = Field(min_length=1, max_length=256)
    disabled: StrictBool = False
    metadata: dict[str, str] | None = None  # accepted, not kept
    channels: list[str] = Field(min_length=1, max_length=100)
    features: list[str] | None = Field(default=None, max_length=1000)
    thresholds: list[ThresholdIn] | None = Field(default=None, max_length=20)

    def native_type(self) -> str:
        if self.type in _UNSUPPORTED_TYPES:
            raise ValidationFailed.on("type", f"'{self.type}' rules are not supported (no invoices)")
        if self.type not in NATIVE_TYPE:
            raise ValidationFailed.on("type", f"must be one of {', '.join(NATIVE_TYPE)}")
        return NATIVE_TYPE[self.type]

    def native_thresholds(self) -> list[dict[str, Any]]:
        if self.type != BALANCE_THRESHOLD:
            if self.thresholds:
                raise ValidationFailed.on("thresholds", f"'{self.type}' rules have no thresholds")
            return []
        if not self.thresholds:
            raise ValidationFailed.on("thresholds", "at least one threshold is required")
        return [_threshold(i, t) for i, t in enumerate(self.thresholds)]


def _threshold(i: int, t: ThresholdIn) -> dict[str, Any]:
    kind = _THRESHOLD_KIND.get(t.type)
    if kind is None:
        raise ValidationFailed.on(f"thresholds[{i}].type", "must be PERCENT, NUMBER or balance_value")
    return {"type": kind, "value": t.value}


class ResendIn(_In):
    channels: list[str] | None = None


# --- responses ---------------------------------------------------------------------------------


def channel_out(e: WebhookEndpoint, *, with_secret: bool) -> dict[str, Any]:
    """`with_secret`: the admin's view, with the signing secret and the custom headers' values
    (which may hold credentials of the receiver); others see the header names only."""
    headers = e.headers or {}
    body: dict[str, Any] = {
        "id": e.id,
        "type": "WEBHOOK",
        "name": e.description or e.url,
        "disabled": not e.enabled,
        "url": e.url,
        "customHeaders": headers if with_secret else dict.fromkeys(headers, REDACTED),
        "createdAt": e.created_at,
        "updatedAt": e.updated_at,
        "deletedAt": e.deleted_at,
    }
    if with_secret:
        body["signingSecret"] = e.secret
    if e.disabled_reason and e.enabled is False:
        body["annotations"] = {"allotment.disabledReason": e.disabled_reason}
    return {k: v for k, v in body.items() if v is not None}


def rule_out(r: NotificationRule, feature_ids: dict[str, str]) -> dict[str, Any]:
    """`feature_ids`: key -> id of the rule's features that still exist."""
    body: dict[str, Any] = {
        "id": r.id,
        "type": OPENMETER_TYPE[r.event_type],
        "name": r.name or r.id,
        "disabled": not r.enabled,
        "channels": [{"id": e, "type": "WEBHOOK"} for e in r.endpoint_ids or []],
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
    }
    if r.features:
        body["features"] = [{"id": feature_ids.get(k, ""), "key": k} for k in r.features]
    if r.event_type == THRESHOLD_REACHED:
        body["thresholds"] = [
            {"value": codec.quantity_number(Decimal(str(t["value"]))), "type": THRESHOLD_NAME[str(t["type"])]}
            for t in r.thresholds
        ]
    return body


def event_out(
    n: Notification, rule: dict[str, Any], deliveries: list[DeliveryView], *, now: datetime
) -> dict[str, Any]:
    type_ = rule["type"]
    return {
        "id": n.id,
        "type": type_,
        "createdAt": n.created_at,
        "rule": rule,
        "deliveryStatus": [_status(v, now=now) for v in deliveries],
        "payload": {"id": n.id, "type": type_, "timestamp": n.created_at,
                    "data": openmeter_data(codec.loads(n.payload), type_)},
    }


def _status(view: DeliveryView, *, now: datetime) -> dict[str, Any]:
    d = view.delivery
    last = view.attempts[-1] if view.attempts else None
    if d.status == DELIVERED:
        state = "SUCCESS"
    elif d.status == DEAD:
        state = "FAILED"
    elif d.locked_until is not None and d.locked_until > now:
        state = "SENDING"
    else:
        state = "RESENDING" if view.attempts else "PENDING"
    body: dict[str, Any] = {
        "state": state,
        "reason": (last.error or "") if last else "",
        "updatedAt": d.last_attempt_at or d.created_at,
        "channel": {"id": d.endpoint_id, "type": "WEBHOOK"},
        "attempts": [
            {"state": "SUCCESS" if a.succeeded else "FAILED", "timestamp": a.at,
             "response": {"statusCode": a.status_code, "body": a.response_excerpt or "",
                          "durationMs": a.latency_ms}}
            for a in view.attempts
        ],
    }
    if state in ("PENDING", "RESENDING"):
        body["nextAttempt"] = d.next_attempt_at
    return body
