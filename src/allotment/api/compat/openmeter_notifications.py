"""OpenMeter notification channels, rules and events (`/api/v1/notification/...`).

A thin adapter over `allotment.notifications`: channels are webhook endpoints that receive only
what rules naming them send; rules are notification rules naming those endpoints; events are
the notifications such rules match, with their deliveries. Delivery, signing (Standard
Webhooks, as OpenMeter's webhook channels) and retries are the native ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.api.compat.openmeter_http import (
    Page,
    PageSize,
    openmeter_fields,
    openmeter_router,
    utc,
)
from allotment.api.compat.openmeter_notification_schemas import (
    CHANNEL_FIELDS,
    RULE_FIELDS,
    ChannelIn,
    ResendIn,
    RuleIn,
    channel_out,
    event_out,
    rule_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import features
from allotment.errors import NotFound, ValidationFailed
from allotment.notifications import catalogue, history, rules, service
from allotment.notifications.bodies import OPENMETER_TYPE
from allotment.notifications.models import Notification, NotificationRule, WebhookEndpoint
from allotment.notifications.schemas import (
    NotificationRuleCreate,
    NotificationRuleUpdate,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from allotment.tenancy.service import Principal
from allotment.types import Instant, utcnow

router = openmeter_router()
_CHUNK = 1000
_SCAN = 10_000  # events: how many of the newest notifications a list looks through
T = TypeVar("T")

Order = Literal["ASC", "DESC"]


def _page(items: list[dict[str, Any]], page: int, size: int) -> Json:
    return Json({"items": items[(page - 1) * size : page * size], "page": page, "pageSize": size,
                 "totalCount": len(items)})


def _sorted(items: list[T], key: Callable[[T], Any], order: Order) -> list[T]:
    return sorted(items, key=key, reverse=order == "DESC")


# --- channels ----------------------------------------------------------------------------------


def _endpoint_data(body: ChannelIn) -> dict[str, Any]:
    return {"url": body.url, "description": body.name, "enabled": not body.disabled,
            "headers": body.custom_headers or {}}


@router.post("/v1/notification/channels", status_code=201)
async def create_channel(body: ChannelIn, principal: Admin, session: WriteSession) -> Json:
    with openmeter_fields(CHANNEL_FIELDS):
        data = WebhookEndpointCreate(
            **_endpoint_data(body), secret=body.signing_secret, rules_only=True, body_format="openmeter"
        )
    endpoint = await service.create_endpoint(session, principal.tenant_id, data, at=utcnow())
    return Json(channel_out(endpoint, with_secret=True), status_code=201)


@router.get("/v1/notification/channels")
async def list_channels(
    principal: Reader,
    session: ReadSession,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    include_disabled: Annotated[bool, Query(alias="includeDisabled")] = False,
    page: Page = 1,
    page_size: PageSize = 100,
    order: Order = "ASC",
    order_by: Annotated[
        Literal["id", "type", "createdAt", "updatedAt"], Query(alias="orderBy")
    ] = "id",
) -> Json:
    found = await _all_endpoints(session, principal.tenant_id, include_deleted)
    found = [e for e in found if include_disabled or e.enabled or e.deleted_at is not None]
    keys: dict[str, Callable[[WebhookEndpoint], Any]] = {
        "id": lambda e: e.id, "type": lambda e: e.id,
        "createdAt": lambda e: e.created_at, "updatedAt": lambda e: e.updated_at,
    }
    items = [channel_out(e, with_secret=_admin(principal))
             for e in _sorted(found, keys[order_by], order)]
    return _page(items, page, page_size)


async def _all_endpoints(
    session: AsyncSession, tenant_id: str, include_deleted: bool
) -> list[WebhookEndpoint]:
    out: list[WebhookEndpoint] = []
    while True:
        chunk = await service.list_endpoints(
            session, tenant_id, after=out[-1].id if out else None, limit=_CHUNK,
            include_deleted=include_deleted,
        )
        out += chunk
        if len(chunk) < _CHUNK:
            return out


def _admin(principal: Principal) -> bool:
    """The signing secret is shown to admin keys only, as native endpoints show it on create."""
    return principal.scope == "admin"


@router.get("/v1/notification/channels/{channel_id}")
async def get_channel(channel_id: str, principal: Reader, session: ReadSession) -> Json:
    endpoint = await service.get_endpoint(session, principal.tenant_id, channel_id)
    return Json(channel_out(endpoint, with_secret=_admin(principal)))


@router.put("/v1/notification/channels/{channel_id}")
async def update_channel(
    channel_id: str, body: ChannelIn, principal: Admin, session: WriteSession
) -> Json:
    """A replacement, as in OpenMeter: headers left out are removed; the secret is kept
    unless one is given."""
    with openmeter_fields(CHANNEL_FIELDS):
        fields = _endpoint_data(body)
        if body.signing_secret is not None:  # none sent: the secret is kept
            fields["secret"] = body.signing_secret
        data = WebhookEndpointUpdate(**fields)
    endpoint = await service.update_endpoint(
        session, principal.tenant_id, channel_id, data, at=utcnow()
    )
    return Json(channel_out(endpoint, with_secret=True))


@router.delete("/v1/notification/channels/{channel_id}", status_code=204)
async def delete_channel(channel_id: str, principal: Admin, session: WriteSession) -> Response:
    await service.delete_endpoint(session, principal.tenant_id, channel_id, at=utcnow())
    return Response(status_code=204)


# --- rules -------------------------------------------------------------------------------------


async def _feature_keys(session: AsyncSession, tenant_id: str, refs: Sequence[str]) -> list[str]:
    """OpenMeter names a rule's features by id or key; rules keep keys."""
    keys = []
    for i, ref in enumerate(refs):
        try:
            keys.append((await features.get(session, tenant_id, ref)).key)
        except NotFound:
            raise ValidationFailed.on(f"features[{i}]", f"no feature '{ref}'") from None
    return keys


async def _rule_out(session: AsyncSession, rule: NotificationRule) -> dict[str, Any]:
    ids = await rules.feature_ids(session, rule.tenant_id, set(rule.features))
    return rule_out(rule, ids)


async def _openmeter_rule(session: AsyncSession, tenant_id: str, rule_id: str) -> NotificationRule:
    rule = await rules.get(session, tenant_id, rule_id)
    if rule.event_type not in OPENMETER_TYPE:  # a grant lead time has no OpenMeter form
        raise NotFound("notification_rule", rule_id)
    return rule


@router.post("/v1/notification/rules", status_code=201)
async def create_rule(body: RuleIn, principal: Admin, session: WriteSession) -> Json:
    event_type = body.native_type()
    thresholds = body.native_thresholds()
    keys = await _feature_keys(session, principal.tenant_id, body.features or [])
    with openmeter_fields(RULE_FIELDS):
        data = NotificationRuleCreate.model_validate(
            {"event_type": event_type, "name": body.name, "features": keys,
             "thresholds": thresholds, "endpoint_ids": body.channels, "enabled": not body.disabled}
        )
        rule = await rules.create(session, principal.tenant_id, data, at=utcnow())
    return Json(await _rule_out(session, rule), status_code=201)


@router.get("/v1/notification/rules")
async def list_rules(
    principal: Reader,
    session: ReadSession,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    include_disabled: Annotated[bool, Query(alias="includeDisabled")] = False,
    feature: Annotated[list[str] | None, Query()] = None,
    channel: Annotated[list[str] | None, Query()] = None,
    page: Page = 1,
    page_size: PageSize = 100,
    order: Order = "ASC",
    order_by: Annotated[
        Literal["id", "type", "createdAt", "updatedAt"], Query(alias="orderBy")
    ] = "id",
) -> Json:
    """Deleted rules are gone (`includeDeleted` finds none)."""
    found = [r for r in await _all_rules(session, principal.tenant_id)
             if r.event_type in OPENMETER_TYPE and (include_disabled or r.enabled)]
    if feature:
        keys = set(await _known_feature_keys(session, principal.tenant_id, feature))
        found = [r for r in found if keys & set(r.features)]
    if channel:
        found = [r for r in found if set(channel) & set(r.endpoint_ids or [])]
    keys_of: dict[str, Callable[[NotificationRule], Any]] = {
        "id": lambda r: r.id, "type": lambda r: OPENMETER_TYPE[r.event_type],
        "createdAt": lambda r: r.created_at, "updatedAt": lambda r: r.updated_at,
    }
    ordered = _sorted(found, keys_of[order_by], order)
    start = (page - 1) * page_size
    shown = [await _rule_out(session, r) for r in ordered[start : start + page_size]]
    return Json({"items": shown, "page": page, "pageSize": page_size, "totalCount": len(ordered)})


async def _known_feature_keys(session: AsyncSession, tenant_id: str, refs: list[str]) -> list[str]:
    """Filters may name features that do not exist (any more): they match nothing."""
    out = []
    for ref in refs:
        try:
            out.append((await features.get(session, tenant_id, ref)).key)
        except NotFound:
            out.append(ref)
    return out


async def _all_rules(session: AsyncSession, tenant_id: str) -> list[NotificationRule]:
    out: list[NotificationRule] = []
    while True:
        chunk = await rules.list_(session, tenant_id, after=out[-1].id if out else None, limit=_CHUNK)
        out += chunk
        if len(chunk) < _CHUNK:
            return out


@router.get("/v1/notification/rules/{rule_id}")
async def get_rule(rule_id: str, principal: Reader, session: ReadSession) -> Json:
    return Json(await _rule_out(session, await _openmeter_rule(session, principal.tenant_id, rule_id)))


@router.put("/v1/notification/rules/{rule_id}")
async def update_rule(rule_id: str, body: RuleIn, principal: Admin, session: WriteSession) -> Json:
    rule = await _openmeter_rule(session, principal.tenant_id, rule_id)
    if body.native_type() != rule.event_type:
        raise ValidationFailed.on("type", "the type of a rule cannot change; create a new rule")
    thresholds = body.native_thresholds()
    keys = await _feature_keys(session, principal.tenant_id, body.features or [])
    with openmeter_fields(RULE_FIELDS):
        data = NotificationRuleUpdate.model_validate(
            {"name": body.name, "features": keys, "endpoint_ids": body.channels,
             "enabled": not body.disabled, **({"thresholds": thresholds} if thresholds else {})}
        )
        rule = await rules.update(session, principal.tenant_id, rule_id, data, at=utcnow())
    return Json(await _rule_out(session, rule))


@router.delete("/v1/notification/rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, principal: Admin, session: WriteSession) -> Response:
    await _openmeter_rule(session, principal.tenant_id, rule_id)
    await rules.delete(session, principal.tenant_id, rule_id)
    return Response(status_code=204)


@router.post("/v1/notification/rules/{rule_id}/test", status_code=201)
async def test_rule(rule_id: str, principal: Admin, session: WriteSession) -> Json:
    """A test message to the rule's channels through the outbox, answered as its event."""
    rule = await _openmeter_rule(session, principal.tenant_id, rule_id)
    with openmeter_fields(RULE_FIELDS):
        notification_id = await rules.send_test(session, principal.tenant_id, rule_id, at=utcnow())
    n = await history.get_notification(session, principal.tenant_id, notification_id)
    body = event_out(n, await _rule_out(session, rule), [], now=utcnow())
    return Json(body, status_code=201)


# --- events ------------------------------------------------------------------------------------

_EVENT_TYPES = (*OPENMETER_TYPE, catalogue.TEST)


def _rule_for(n: Notification, candidates: list[NotificationRule]) -> NotificationRule | None:
    """The rule an event is shown under: a test's own rule, else the first rule that matches
    it now (rules that name channels first)."""
    if n.type == catalogue.TEST:
        return next((r for r in candidates if r.id == n.rule_id), None)
    payload = codec.loads(n.payload)
    return next((r for r in candidates if rules.matches(r, n.type, payload)), None)


async def _candidates(session: AsyncSession, tenant_id: str) -> list[NotificationRule]:
    found = [r for r in await _all_rules(session, tenant_id) if r.event_type in OPENMETER_TYPE]
    return sorted(found, key=lambda r: (not r.endpoint_ids, r.id))


async def _event(session: AsyncSession, n: Notification, rule: NotificationRule) -> dict[str, Any]:
    views = await history.deliveries_of(session, n)
    return event_out(n, await _rule_out(session, rule), views, now=utcnow())


@router.get("/v1/notification/events")
async def list_events(
    principal: Reader,
    session: ReadSession,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
    feature: Annotated[list[str] | None, Query()] = None,
    subject: Annotated[list[str] | None, Query()] = None,
    rule: Annotated[list[str] | None, Query()] = None,
    channel: Annotated[list[str] | None, Query()] = None,
    page: Page = 1,
    page_size: PageSize = 100,
    order: Order = "DESC",
    order_by: Annotated[Literal["id", "createdAt"], Query(alias="orderBy")] = "createdAt",
) -> Json:
    """Events of OpenMeter rules: the newest notifications a rule matches (up to `_SCAN`)."""
    tenant_id = principal.tenant_id
    found = await history.list_notifications(
        session, tenant_id, type=None, customer_id=None, before=None, limit=_SCAN,
        types=_EVENT_TYPES, since=utc(from_), until=utc(to),
    )
    candidates = await _candidates(session, tenant_id)
    pairs = [(n, r) for n in found if (r := _rule_for(n, candidates)) is not None]
    if rule:
        pairs = [(n, r) for n, r in pairs if r.id in rule]
    if feature or subject:
        pairs = [(n, r) for n, r in pairs if _about(codec.loads(n.payload), feature, subject)]
    if channel:
        sent = await history.sent_to(session, tenant_id, [n.seq for n, _ in pairs], channel)
        pairs = [(n, r) for n, r in pairs if n.seq in sent]
    key = (lambda p: p[0].id) if order_by == "id" else (lambda p: (p[0].created_at, p[0].seq))
    ordered = _sorted(pairs, key, order)
    start = (page - 1) * page_size
    shown = [await _event(session, n, r) for n, r in ordered[start : start + page_size]]
    return Json({"items": shown, "page": page, "pageSize": page_size, "totalCount": len(ordered)})


def _about(payload: dict[str, Any], feature: list[str] | None, subject: list[str] | None) -> bool:
    f, c = payload.get("feature") or {}, payload.get("customer") or {}
    if feature and not {f.get("id"), f.get("key")} & set(feature):
        return False
    return not subject or c.get("key") in subject


async def _event_notification(
    session: AsyncSession, tenant_id: str, event_id: str
) -> tuple[Notification, NotificationRule]:
    n = await history.get_notification(session, tenant_id, event_id)
    found = _rule_for(n, await _candidates(session, tenant_id)) if n.type in _EVENT_TYPES else None
    if found is None:  # not an event of any OpenMeter rule
        raise NotFound("notification_event", event_id)
    return n, found


@router.get("/v1/notification/events/{event_id}")
async def get_event(event_id: str, principal: Reader, session: ReadSession) -> Json:
    n, found = await _event_notification(session, principal.tenant_id, event_id)
    return Json(await _event(session, n, found))


@router.post("/v1/notification/events/{event_id}/resend", status_code=202)
async def resend_event(
    event_id: str,
    principal: Admin,
    session: WriteSession,
    body: Annotated[ResendIn | None, Body()] = None,
) -> Response:
    """Send it again, with the same `webhook-id`, to the channels named (default: all it went to)."""
    await _event_notification(session, principal.tenant_id, event_id)
    named = body.channels if body else None
    channels: list[str | None] = list(named) if named else [None]
    for i, endpoint_id in enumerate(channels):
        try:
            await history.replay(
                session, principal.tenant_id, event_id, endpoint_id=endpoint_id, at=utcnow()
            )
        except NotFound as missing:
            if missing.kind != "webhook_endpoint":
                raise
            raise ValidationFailed.on(f"channels[{i}]", f"no channel '{endpoint_id}'") from None
    return Response(status_code=202)

