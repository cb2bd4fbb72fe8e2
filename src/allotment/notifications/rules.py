"""Notification rules: which thresholds warn, for which features, and when grants warn.

A tenant without any `entitlement.threshold_reached` rule gets the defaults, 80 % and 100 %
of the effective soft limit. As soon as it has one (even disabled), only its enabled rules
count: a tenant that configured thresholds gets exactly those. Thresholds of several rules
that apply to a feature add up. `grant.expiring` works the same way with a lead time: none
configured means 72 hours; several that apply to a feature mean the longest.

A rule may also name endpoints (`endpoint_ids`): whatever it matches (its type, a feature
it covers, one of its thresholds) goes to those endpoints too, whatever they subscribe to.
Endpoints marked `rules_only` receive nothing else. Matching happens at fan-out, from the
payload, so emission on the hot paths is unchanged. An `entitlement.period_reset` rule only
routes: resets are emitted whether or not a rule asks for them.

Checks read the rules on every consume, so each process keeps a tenant's rules for
`CACHE_SECONDS` (like verified API keys): a change takes effect at once in the process that
made it and within that time in every other one. Functions take the session first and never
commit.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import features
from allotment.entitlements.crossings import Threshold
from allotment.errors import NotFound, ValidationFailed
from allotment.notifications import service
from allotment.notifications.models import NotificationRule
from allotment.notifications.schemas import (
    DEFAULT_LEAD_TIME_SECONDS,
    GRANT_EXPIRING,
    THRESHOLD_REACHED,
    NotificationRuleCreate,
    NotificationRuleUpdate,
    ThresholdSpec,
)
from allotment.types import new_id

CACHE_SECONDS = 2.0
DEFAULT_THRESHOLDS = (Threshold("percent", Decimal(80)), Threshold("percent", Decimal(100)))
DEFAULT_LEAD_TIME = timedelta(seconds=DEFAULT_LEAD_TIME_SECONDS)


@dataclass(frozen=True)
class _Applies:
    feature_ids: frozenset[str] | None  # None: every feature
    thresholds: tuple[Threshold, ...]
    lead_time: timedelta | None

    def covers(self, feature_id: str) -> bool:
        return self.feature_ids is None or feature_id in self.feature_ids


@dataclass(frozen=True)
class TenantRules:
    """A tenant's enabled rules, with feature keys resolved to ids when they were read."""

    thresholds_configured: bool
    threshold_rules: tuple[_Applies, ...]
    expiring_configured: bool
    expiring_rules: tuple[_Applies, ...]

    def thresholds_for(self, feature_id: str) -> tuple[Threshold, ...]:
        if not self.thresholds_configured:
            return DEFAULT_THRESHOLDS
        found = (t for r in self.threshold_rules if r.covers(feature_id) for t in r.thresholds)
        return tuple(dict.fromkeys(found))

    def lead_time_for(self, feature_id: str) -> timedelta | None:
        """How long before a grant on the feature expires to tell; None: not at all."""
        if not self.expiring_configured:
            return DEFAULT_LEAD_TIME
        leads = [r.lead_time for r in self.expiring_rules if r.covers(feature_id) and r.lead_time]
        return max(leads, default=None)


_cache: dict[str, tuple[float, TenantRules]] = {}


async def for_tenant(session: AsyncSession, tenant_id: str) -> TenantRules:
    """The tenant's rules, from this process's cache when read less than CACHE_SECONDS ago."""
    known = cached(tenant_id)
    if known is not None:
        return known
    now = time.monotonic()
    found = await _load(session, tenant_id)
    if len(_cache) >= 100_000:
        _cache.clear()
    _cache[tenant_id] = (now + CACHE_SECONDS, found)
    return found


async def longest_lead_time(session: AsyncSession) -> timedelta:
    """The longest lead time any tenant may use: how far ahead a scan for expiring grants looks."""
    longest = await session.scalar(
        select(func.max(NotificationRule.lead_time_seconds)).where(
            NotificationRule.event_type == GRANT_EXPIRING, NotificationRule.enabled.is_(True)
        )
    )
    return max(DEFAULT_LEAD_TIME, timedelta(seconds=int(longest or 0)))


def cached(tenant_id: str) -> TenantRules | None:
    """The tenant's rules as `for_tenant` would answer them from the cache, or None."""
    entry = _cache.get(tenant_id)
    if entry is not None and entry[0] > time.monotonic():
        return entry[1]
    return None


def forget(tenant_id: str) -> None:
    """Drop the cached rules of a tenant (after a change made in this process)."""
    _cache.pop(tenant_id, None)


async def _load(session: AsyncSession, tenant_id: str) -> TenantRules:
    rows = list(await session.scalars(select(NotificationRule).where(NotificationRule.tenant_id == tenant_id)))
    ids = await feature_ids(session, tenant_id, {k for r in rows for k in r.features})
    by_type: dict[str, list[_Applies]] = {THRESHOLD_REACHED: [], GRANT_EXPIRING: []}
    for r in rows:
        if r.enabled and r.event_type in by_type:
            by_type[r.event_type].append(_applies(r, ids))
    types = {r.event_type for r in rows}
    return TenantRules(
        THRESHOLD_REACHED in types, tuple(by_type[THRESHOLD_REACHED]),
        GRANT_EXPIRING in types, tuple(by_type[GRANT_EXPIRING]),
    )


async def feature_ids(session: AsyncSession, tenant_id: str, keys: set[str]) -> dict[str, str]:
    """key -> id of the live features among `keys`; a key archived since is left out."""
    while keys:
        try:
            return {k: f.id for k, f in (await features.by_keys(session, tenant_id, sorted(keys))).items()}
        except NotFound as gone:
            keys.discard(gone.key)
    return {}


def _applies(rule: NotificationRule, ids: dict[str, str]) -> _Applies:
    # A key that names no live feature matches nothing (rather than everything).
    feature_ids = frozenset(ids.get(k, "") for k in rule.features) if rule.features else None
    lead = None if rule.lead_time_seconds is None else timedelta(seconds=rule.lead_time_seconds)
    return _Applies(feature_ids, thresholds_of(rule), lead)


def thresholds_of(rule: NotificationRule) -> tuple[Threshold, ...]:
    return tuple(Threshold(t["type"], Decimal(str(t["value"]))) for t in rule.thresholds)  # type: ignore[arg-type]


# --- CRUD -------------------------------------------------------------------------------------


async def create(
    session: AsyncSession, tenant_id: str, data: NotificationRuleCreate, *, at: datetime
) -> NotificationRule:
    lead = data.lead_time_seconds
    if data.event_type == THRESHOLD_REACHED:
        if not data.thresholds:
            raise ValidationFailed.on("thresholds", "a threshold rule needs at least one threshold")
    elif data.thresholds:
        raise ValidationFailed.on("thresholds", "only entitlement.threshold_reached rules have thresholds")
    if data.event_type == GRANT_EXPIRING:
        lead = DEFAULT_LEAD_TIME_SECONDS if lead is None else lead
    elif lead is not None:
        raise ValidationFailed.on("lead_time_seconds", "only grant.expiring rules have a lead time")
    await _require_features(session, tenant_id, data.features)
    await _require_endpoints(session, tenant_id, data.endpoint_ids)
    rule = NotificationRule(
        id=new_id("nrl"), tenant_id=tenant_id, event_type=data.event_type, name=data.name,
        features=list(dict.fromkeys(data.features)), thresholds=_stored(data.thresholds),
        lead_time_seconds=lead, endpoint_ids=list(dict.fromkeys(data.endpoint_ids)),
        enabled=data.enabled, created_at=at, updated_at=at,
    )
    session.add(rule)
    await session.flush()
    forget(tenant_id)
    return rule


async def get(session: AsyncSession, tenant_id: str, rule_id: str) -> NotificationRule:
    rule = await session.get(NotificationRule, rule_id)
    if rule is None or rule.tenant_id != tenant_id:
        raise NotFound("notification_rule", rule_id)
    return rule


async def list_(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int
) -> list[NotificationRule]:
    stmt = select(NotificationRule).where(NotificationRule.tenant_id == tenant_id)
    if after:
        stmt = stmt.where(NotificationRule.id > after)
    return list(await session.scalars(stmt.order_by(NotificationRule.id).limit(limit)))


async def update(
    session: AsyncSession, tenant_id: str, rule_id: str, data: NotificationRuleUpdate, *, at: datetime
) -> NotificationRule:
    rule = await get(session, tenant_id, rule_id)
    changes = data.model_dump(exclude_unset=True)
    if data.features is not None:
        await _require_features(session, tenant_id, data.features)
        rule.features = list(dict.fromkeys(data.features))
    if data.thresholds is not None:
        if rule.event_type != THRESHOLD_REACHED:
            raise ValidationFailed.on("thresholds", "only entitlement.threshold_reached rules have thresholds")
        if not data.thresholds:
            raise ValidationFailed.on("thresholds", "a threshold rule needs at least one threshold")
        rule.thresholds = _stored(data.thresholds)
    if data.lead_time_seconds is not None:
        if rule.event_type != GRANT_EXPIRING:
            raise ValidationFailed.on("lead_time_seconds", "only grant.expiring rules have a lead time")
        rule.lead_time_seconds = data.lead_time_seconds
    if data.endpoint_ids is not None:
        await _require_endpoints(session, tenant_id, data.endpoint_ids)
        rule.endpoint_ids = list(dict.fromkeys(data.endpoint_ids))
    if "name" in changes:
        rule.name = data.name
    if changes.get("enabled") is not None:
        rule.enabled = bool(changes["enabled"])
    rule.updated_at = at
    await session.flush()
    forget(tenant_id)
    return rule


async def delete(session: AsyncSession, tenant_id: str, rule_id: str) -> None:
    await session.delete(await get(session, tenant_id, rule_id))
    await session.flush()
    forget(tenant_id)


def _stored(thresholds: Sequence[ThresholdSpec]) -> list[dict[str, object]]:
    """JSON-safe: values as decimal strings, in the order given, without repeats."""
    seen = dict.fromkeys((t.type, format(t.value.normalize(), "f")) for t in thresholds)
    return [{"type": kind, "value": value} for kind, value in seen]


async def _require_features(session: AsyncSession, tenant_id: str, keys: Sequence[str]) -> None:
    try:
        await features.by_keys(session, tenant_id, keys)
    except NotFound as missing:
        i = list(keys).index(missing.key)
        raise ValidationFailed.on(f"features[{i}]", f"no feature with key '{missing.key}'") from None


async def _require_endpoints(session: AsyncSession, tenant_id: str, ids: Sequence[str]) -> None:
    for i, endpoint_id in enumerate(ids):
        try:
            await service.get_endpoint(session, tenant_id, endpoint_id)
        except NotFound:
            raise ValidationFailed.on(f"endpoint_ids[{i}]", f"no webhook endpoint '{endpoint_id}'") from None


# --- routing ----------------------------------------------------------------------------------


def matches(rule: NotificationRule, type_: str, payload: Mapping[str, object]) -> bool:
    """Whether a notification (its type and payload as emitted) is one this rule asks for."""
    if rule.event_type != type_:
        return False
    feature = payload.get("feature")
    key = feature.get("key") if isinstance(feature, Mapping) else None
    if rule.features and key not in rule.features:
        return False
    if type_ != THRESHOLD_REACHED:
        return True
    threshold = payload.get("threshold")
    label = threshold.get("label") if isinstance(threshold, Mapping) else None
    return any(t.label == label for t in thresholds_of(rule))


async def routes(session: AsyncSession, tenant_ids: set[str]) -> dict[str, list[NotificationRule]]:
    """The rules of these tenants that name endpoints, oldest first (disabled ones too: a
    disabled rule routes nothing, but its test still reaches its endpoints)."""
    r = NotificationRule
    found = await session.scalars(select(r).where(r.tenant_id.in_(tenant_ids)).order_by(r.id))
    out: dict[str, list[NotificationRule]] = defaultdict(list)
    for rule in found:
        if rule.endpoint_ids:
            out[rule.tenant_id].append(rule)
    return out


async def send_test(session: AsyncSession, tenant_id: str, rule_id: str, *, at: datetime) -> str:
    """A `webhook.test` ping to the endpoints the rule names, through the real outbox."""
    rule = await get(session, tenant_id, rule_id)
    if not rule.endpoint_ids:
        raise ValidationFailed.on("endpoint_ids", "the rule names no endpoint to test")
    return await service.ping(
        session, tenant_id, at=at, rule_id=rule.id,
        payload={"rule_id": rule.id, "event_type": rule.event_type, "name": rule.name},
    )
