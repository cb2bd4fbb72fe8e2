"""API shapes of webhook endpoints, notifications and deliveries (tables are in models.py)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
)

from allotment.codec import nearest_number
from allotment.notifications import catalogue, signing
from allotment.types import NotNull, PositiveQuantity

MAX_URL = 2048


def check_url(value: str) -> str:
    """Absolute http(s) URL with a host; anything else could never be delivered to."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if port == 0:
        raise ValueError("port 0 cannot be connected to")
    return value


def whole_number(value: object) -> object:
    """JSON has one kind of number: `36.0` is the integer 36, as JSON Schema's `integer` says.
    Text and booleans stay what they are, and are refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def check_event_type(value: str) -> str:
    if value not in catalogue.SUBSCRIBABLE:
        known = ", ".join(sorted(catalogue.SUBSCRIBABLE))
        raise ValueError(f"unknown event type '{value}'; known types: {known}")
    return value


def check_secret(value: str) -> str:
    problem = signing.secret_problem(value)
    if problem:
        raise ValueError(problem)
    return value


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Set by the sender for every attempt: a custom header may not replace them.
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
     "host", "transfer-encoding", "connection"}
)


def check_headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _TOKEN.match(name):
            raise ValueError(f"'{name}' is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"'{name}' is set by the sender and cannot be overridden")
        if len(text) > 1024 or any(c in text for c in "\r\n\0"):
            raise ValueError(f"the value of '{name}' must be one line of at most 1024 characters")
    return value


def _secret_pattern() -> str:
    """`whsec_` + base64 (padded) of MIN_SECRET_BYTES to MAX_SECRET_BYTES bytes, as a pattern:
    4 characters per 3 bytes, then 2 characters and `==` for one more byte or 3 and `=` for two."""
    low, high, char = signing.MIN_SECRET_BYTES, signing.MAX_SECRET_BYTES, "[A-Za-z0-9+/]"
    ends = {0: "", 1: f"{char}{{2}}==", 2: f"{char}{{3}}="}
    forms = [f"({char}{{4}}){{{-(-(low - extra) // 3)},{(high - extra) // 3}}}{end}" for extra, end in ends.items()]
    return rf"^{signing.PREFIX}({'|'.join(forms)})$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)  # letters and "-"


# What the validators above take, stated in the schema where JSON Schema can say it, so that a
# client generated from it never sends what is refused: a URL as `urlsplit` reads it (an http or
# https scheme in any case, a host, a port from 1 to 65535), the secret's encoding, the known
# event types, header names that are tokens and not set by the sender, values of one line.
_HOST = r"[^\x00-\x1f/?#@:\[\]\\\x7f]+"
_PORT = r"(:(0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)?"
_URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://([^/?#\x00\[\]]*@)?{_HOST}{_PORT}([/?#][^\x00]*)?$"
_HEADERS_SCHEMA = {
    "propertyNames": {"pattern": _TOKEN.pattern,
                      "not": {"pattern": f"^({'|'.join(_any_case(h) for h in sorted(RESERVED_HEADERS))})$"}},
    "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": r"^[^\r\n\u0000]*$"},
}

Url = Annotated[str, Field(min_length=1, max_length=MAX_URL, json_schema_extra={"pattern": _URL_PATTERN}),
                AfterValidator(check_url)]
EventType = Annotated[str, AfterValidator(check_event_type),
                      Field(json_schema_extra={"enum": sorted(catalogue.SUBSCRIBABLE)})]
Secret = Annotated[str, AfterValidator(check_secret), Field(json_schema_extra={"pattern": _secret_pattern()})]
Description = Annotated[str, Field(max_length=1024)]
Headers = Annotated[
    dict[str, str],
    Field(max_length=20, description="Sent with every attempt (not the signature headers).",
          json_schema_extra=_HEADERS_SCHEMA),
    AfterValidator(check_headers),
]
RulesOnly = Annotated[
    StrictBool,
    Field(description="Receive only what notification rules naming this endpoint send."),
]
EventTypes = Annotated[
    list[EventType],
    Field(max_length=len(catalogue.SUBSCRIBABLE), description="Types to receive; empty: all."),
]


BodyFormat = Annotated[Literal["native", "openmeter"], Field(
    description="`native` bodies, or OpenMeter's (its event types and data) for its receivers."
)]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    description: Description | None = None
    secret: Secret | None = Field(
        default=None, description="`whsec_` + base64 of 24-64 bytes; generated when absent."
    )
    event_types: EventTypes = Field(default_factory=list)
    enabled: StrictBool = True
    rules_only: RulesOnly = False
    headers: Headers = Field(default_factory=dict)
    body_format: BodyFormat = "native"


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[Url | None, NotNull] = None
    description: Description | None = None
    event_types: Annotated[EventTypes | None, NotNull] = None
    enabled: Annotated[StrictBool | None, NotNull] = Field(
        default=None, description="Re-enabling resumes the deliveries held while disabled."
    )
    rules_only: Annotated[RulesOnly | None, NotNull] = None
    headers: Annotated[Headers | None, NotNull] = None
    body_format: Annotated[BodyFormat | None, NotNull] = None
    secret: Annotated[Secret | None, NotNull] = Field(
        default=None, description="Replace the signing secret with this one (see rotate-secret)."
    )


REDACTED = "<redacted>"


class WebhookEndpointRead(BaseModel):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    rules_only: bool
    headers: dict[str, str] = Field(description=(
        "Sent with every attempt. The values (often credentials) are shown to admin keys only; "
        f"other keys see each name with the value `{REDACTED}`."
    ))
    body_format: BodyFormat
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        default=None, description="Until then the secret a rotation replaced still signs too."
    )
    created_at: datetime
    updated_at: datetime


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_previous_seconds: Annotated[StrictInt, BeforeValidator(whole_number)] = Field(
        default=86_400, ge=0, le=7 * 86_400,
        description="How long the replaced secret keeps signing beside the new one (0: not at all).",
    )


class WebhookEndpointWithSecret(WebhookEndpointRead):
    """Only create and rotate-secret answer with the secret."""

    secret: str


class PingQueued(BaseModel):
    notification_id: str = Field(description="Follow it at `GET /v1/notifications/{notification_id}`.")


DeliveryStatus = Literal["pending", "delivered", "dead"]


class AttemptRead(BaseModel):
    """One try at delivering a notification to an endpoint."""

    attempt: int = Field(description="1 for the first try, then counting up.")
    at: datetime = Field(description="When the try was made.")
    succeeded: bool = Field(description="The receiver answered 2xx.")
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(
        description="Why the try failed (an HTTP status, a timeout, a connection error); null when it succeeded."
    )
    latency_ms: int = Field(description="How long the try took, in milliseconds.")
    response_excerpt: str | None = Field(description="The first kilobyte of the answer's body; null when it had none.")


class DeliveryRead(BaseModel):
    """One notification on its way to one endpoint."""

    id: str = Field(description="The delivery's id.")
    notification_id: str = Field(description="The notification delivered.")
    type: str = Field(description="The notification's type, e.g. entitlement.threshold_reached.")
    endpoint_id: str = Field(description="The webhook endpoint it goes to.")
    status: DeliveryStatus = Field(description="pending: to be tried (again); delivered; dead: given up on.")
    attempt_count: int = Field(description="Tries made so far.")
    next_attempt_at: datetime | None = Field(description="When pending: the next try.")
    delivered_at: datetime | None = Field(description="When the receiver accepted it; null until then.")
    created_at: datetime = Field(description="When it was queued for this endpoint.")
    attempts: list[AttemptRead] = Field(description="Every try, oldest first.")


class NotificationRead(BaseModel):
    """Something the tenant is told of, sent to its webhook endpoints."""

    id: str = Field(description="The notification's id; receivers see it as `webhook-id`.")
    type: str = Field(description="What happened, e.g. entitlement.threshold_reached.")
    customer_id: str | None = Field(description="The customer it is about; null when it is about none.")
    payload: dict[str, Any] = Field(description="What it says: the `data` of its webhooks (in the native body format).")
    created_at: datetime = Field(description="When it was emitted.")


class NotificationDetail(NotificationRead):
    deliveries: list[DeliveryRead]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_id: str | None = Field(
        default=None, description="Only to this endpoint (default: every endpoint it went to)."
    )


# --- notification rules ---------------------------------------------------------------------

THRESHOLD_REACHED = "entitlement.threshold_reached"
GRANT_EXPIRING = "grant.expiring"
PERIOD_RESET = "entitlement.period_reset"
RuleEventType = Literal["entitlement.threshold_reached", "grant.expiring", "entitlement.period_reset"]
DEFAULT_LEAD_TIME_SECONDS = 72 * 3600
MAX_LEAD_TIME_SECONDS = 366 * 86_400


class ThresholdSpec(BaseModel):
    """`percent` of the effective soft limit (e.g. 80), an `absolute` amount of usage, or a
    `balance`: reached when what is left below the effective soft limit falls to the value
    (e.g. 10 kWh of prepaid credit left; never, while the whole limit is at most that)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["percent", "absolute", "balance"]
    value: Annotated[PositiveQuantity, PlainSerializer(nearest_number, return_type=int | float)]


FeatureKeys = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(max_length=1000, description="Feature keys the rule applies to; empty: every feature."),
]
Thresholds = Annotated[list[ThresholdSpec], Field(max_length=20)]
LeadTime = Annotated[int, Field(ge=60, le=MAX_LEAD_TIME_SECONDS)]
RuleName = Annotated[str, Field(min_length=1, max_length=256)]
EndpointIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=40)]],
    Field(
        max_length=100,
        description="Endpoints that receive what this rule matches, whatever they subscribe to.",
    ),
]


class NotificationRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: RuleEventType
    name: RuleName | None = None
    features: FeatureKeys = Field(default_factory=list)
    thresholds: Thresholds = Field(
        default_factory=list, description="entitlement.threshold_reached: the levels (at least one)."
    )
    lead_time_seconds: LeadTime | None = Field(
        default=None, description="grant.expiring only: how long before expiry to tell (default 72 h)."
    )
    endpoint_ids: EndpointIds = Field(default_factory=list)
    enabled: StrictBool = True


class NotificationRuleUpdate(BaseModel):
    """Fields left out keep their value; the event type of a rule never changes."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName | None = Field(default=None, description="null clears the name.")
    features: Annotated[FeatureKeys | None, NotNull] = None
    thresholds: Annotated[Thresholds | None, NotNull] = None
    lead_time_seconds: Annotated[LeadTime | None, NotNull] = None
    endpoint_ids: Annotated[EndpointIds | None, NotNull] = None
    enabled: Annotated[StrictBool | None, NotNull] = None


class NotificationRuleRead(BaseModel):
    id: str
    event_type: str
    name: str | None
    features: list[str]
    thresholds: list[ThresholdSpec]
    lead_time_seconds: int | None
    endpoint_ids: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
