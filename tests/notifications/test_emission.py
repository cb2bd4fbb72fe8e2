"""Entitlements emit their notifications once per occurrence, in the transaction of their cause."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from allotment.db import Database
from allotment.entitlements import check as checks
from allotment.entitlements import grants, notices, reservations, resets, seats, subscriptions
from allotment.entitlements.models import CustomerEntitlement, EntitlementUsage
from allotment.entitlements.schemas import SubscriptionCreate
from allotment.notifications.models import Notification
from allotment.types import to_micros, utcnow
from allotment.worker.delivery import scan_due
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.helpers import event, meter
from tests.notifications.conftest import drain, endpoint

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
THRESHOLDS = [{"type": "percent", "value": v} for v in (50, 80, 100)]


async def _catalogue(c: Any, *, rule: bool = True, subscribed: bool = True, **feature_extra: Any) -> Any:
    """acme on starter from now: 10 tokens included, overdraft to 15, monthly."""
    if rule:
        await ok(await c.post("/v1/notification-rules", json={
            "event_type": "entitlement.threshold_reached", "thresholds": THRESHOLDS}), 201)
    await feature(c, "tokens", **feature_extra)
    await plan(c, "starter", [metered("tokens", 10, 10, 15)])
    await plan(c, "pro", [metered("tokens", 100, 100, 150)])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    if not subscribed:
        return None
    return await subscribe(c, "acme", "starter")


async def _catalogue_at_t0(c: Any, db: Database, tenant_id: str) -> None:
    """As `_catalogue`, with the subscription made at T0 (driven through the services from there)."""
    await _catalogue(c, subscribed=False)
    async with db.transaction() as s:
        data = SubscriptionCreate(customer="acme", plan="starter")
        await subscriptions.create(s, tenant_id, data, actor="test", at=T0)


async def _check(c: Any, quantity: int = 1, **body: Any) -> Any:
    payload = {"customer": "acme", "feature": "tokens", "quantity": quantity, "consume": True, **body}
    return await ok(await c.post("/v1/check", json=payload))


async def _consume(
    db: Database, tenant_id: str, quantity: int, at: datetime, customer: str = "acme", **extra: Any
) -> checks.CheckResult:
    async with db.transaction() as s:
        request = checks.CheckRequest(customer, "tokens", D(quantity), consume=True, **extra)
        return await checks.check(s, tenant_id, request, at=at)


async def _emitted(db: Database, tenant_id: str, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of the tenant's notifications in emission order, of `types` if given."""
    async with db.transaction(readonly=True) as s:
        rows = (await s.scalars(
            select(Notification).where(Notification.tenant_id == tenant_id).order_by(Notification.seq)
        )).all()
    return [(n.type, orjson.loads(n.payload)) for n in rows if not types or n.type in types]


def _labels(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [p["threshold"]["label"] if t == notices.THRESHOLD_REACHED else t.split(".")[1] for t, p in found]


USAGE_TYPES = (notices.THRESHOLD_REACHED, notices.OVERDRAFT_STARTED, notices.HARD_LIMIT_REACHED)


async def test_consuming_over_http_reaches_each_threshold_once_in_order_signed(db, tenant, receiver, sender):
    """50/80/100 %, overdraft and the cap arrive once each, in order, and verify."""
    c = tenant.client
    await _catalogue(c)
    hook = await endpoint(tenant, receiver.url)
    for _ in range(15):
        await _check(c)
    assert (await _check(c))["decision"] == "deny"
    await drain(db, sender, at=utcnow())
    messages = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.received]
    usage = [m for m in messages if m["type"] in USAGE_TYPES]
    assert [(m["type"], m["data"].get("threshold", {}).get("label"), m["data"]["usage"]) for m in usage] == [
        (notices.THRESHOLD_REACHED, "50%", 5), (notices.THRESHOLD_REACHED, "80%", 8),
        (notices.THRESHOLD_REACHED, "100%", 10), (notices.OVERDRAFT_STARTED, None, 11),
        (notices.HARD_LIMIT_REACHED, None, 15),
    ]
    first = usage[0]["data"]
    assert first["customer"]["key"] == "acme" and first["feature"]["key"] == "tokens"
    assert (first["included"], first["soft_limit"], first["hard_limit"], first["balance"]) == (10, 10, 15, 5)
    assert first["period_start"] is not None and first["period_end"] > first["period_start"]
    assert [m["type"] for m in messages].count(notices.USAGE_DENIED) == 1


async def test_without_rules_the_defaults_are_80_and_100_percent(db, tenant):
    c = tenant.client
    await _catalogue(c, rule=False)
    await _check(c, 12)
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["80%", "100%", "overdraft_started"]


async def test_rules_per_feature_and_absolute_thresholds(db, tenant):
    """A rule for another feature does not apply; an absolute one does; defaults are gone."""
    c = tenant.client
    await _catalogue(c, rule=False)
    await feature(c, "other")
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "features": ["other"], "thresholds": THRESHOLDS}), 201)
    rule = await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "features": ["tokens"],
        "thresholds": [{"type": "absolute", "value": 3}]}), 201)
    assert rule["id"].startswith("nrl_") and rule["thresholds"] == [{"type": "absolute", "value": 3}]
    await _check(c, 9)
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["3"]


async def test_bad_rules_name_the_field(tenant):
    c = tenant.client
    bad = [
        ({"event_type": "entitlement.threshold_reached", "thresholds": []}, "thresholds"),
        ({"event_type": "entitlement.threshold_reached", "thresholds": [{"type": "percent", "value": -1}]},
         "thresholds[0].value"),
        ({"event_type": "entitlement.threshold_reached", "features": ["nope"], "thresholds": THRESHOLDS},
         "features[0]"),
        ({"event_type": "seat.overdraft", "thresholds": THRESHOLDS}, "event_type"),
    ]
    for body, field in bad:
        resp = await c.post("/v1/notification-rules", json=body)
        assert resp.status_code == 422, resp.text
        assert field in [e["field"] for e in resp.json()["errors"]], resp.text


async def test_a_retried_consume_emits_nothing_twice(db, tenant):
    """The same idempotency key consumes once, so it crosses once; so does a duplicate crossing."""
    c = tenant.client
    await _catalogue(c)
    for _ in range(2):
        await _check(c, 8, idempotency_key="k1")
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["50%", "80%"]


async def test_the_reset_is_told_at_the_boundary_without_waiting_for_usage(db, tenant):
    """The worker's periodic scan tells of January's reset just after February begins, once;
    February's first usage tells nothing more, and an idle February has no reset to tell."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    await _consume(db, tenant.id, 9, T0 + timedelta(days=3))
    feb, mar = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    await scan_due(db, at=feb - timedelta(minutes=1))
    assert await _emitted(db, tenant.id, notices.PERIOD_RESET) == []
    await scan_due(db, at=feb + timedelta(minutes=1))
    await scan_due(db, at=feb + timedelta(minutes=2))
    [(_, reset)] = await _emitted(db, tenant.id, notices.PERIOD_RESET)
    assert (reset["previous_usage"], reset["usage"], reset["included"]) == (9, 0, 10)
    assert (reset["period_start"], reset["period_end"]) == ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
    assert reset["previous_period_start"] == "2026-01-01T00:00:00Z" and reset["customer"]["key"] == "acme"
    await _consume(db, tenant.id, 1, feb + timedelta(days=1))
    assert len(await _emitted(db, tenant.id, notices.PERIOD_RESET)) == 1
    await scan_due(db, at=mar + timedelta(minutes=1))  # February had 1: its reset is told
    assert len(await _emitted(db, tenant.id, notices.PERIOD_RESET)) == 2
    await scan_due(db, at=datetime(2026, 4, 1, 0, 1, tzinfo=UTC))  # March had none
    await _consume(db, tenant.id, 1, datetime(2026, 4, 2, tzinfo=UTC))  # nor does April's first usage
    assert len(await _emitted(db, tenant.id, notices.PERIOD_RESET)) == 2


async def test_a_reset_into_a_period_already_over_is_not_told(db, tenant):
    """January's usage first seen by a scan in March (a backdated subscription, a worker that was
    down) tells no reset into February: that period is past, and March's own come first."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    await _consume(db, tenant.id, 9, T0 + timedelta(days=3))
    await scan_due(db, at=datetime(2026, 3, 1, 0, 1, tzinfo=UTC))
    assert await _emitted(db, tenant.id, notices.PERIOD_RESET) == []


async def test_next_period_crosses_again_and_tells_of_the_reset(db, tenant):
    """The reset told by February's first consume carries February's opening numbers (usage 0,
    the whole balance), as the worker's scan would: not the numbers after that consume, which
    its own crossings tell, so the same reset no longer says two things by who told it."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    await _consume(db, tenant.id, 9, T0 + timedelta(days=3))
    await _consume(db, tenant.id, 9, T0 + timedelta(days=33))
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["50%", "80%", "period_reset", "50%", "80%"]
    reset = found[2][1]
    assert reset["previous_usage"] == 9 and reset["period_start"] == "2026-02-01T00:00:00Z"
    assert (reset["usage"], reset["balance"]) == (0, 10)


async def test_a_reset_says_the_same_told_by_the_scan_or_by_the_first_usage(db, tenant):
    """acme's reset told by the scan and globex's by its first usage, after a top-up that only
    starts later in February: both give the opening state of February."""
    c = tenant.client
    await _catalogue(c, subscribed=False)
    await customer(c, "globex")
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    async with db.transaction() as s:
        for key in ("acme", "globex"):
            await subscriptions.create(s, tenant.id, SubscriptionCreate(customer=key, plan="starter"),
                                       actor="test", at=T0)
            await grants.create(s, tenant.id, customer=key, feature="tokens", amount=D(5),
                                effective_at=feb + timedelta(hours=12), at=T0)
    for key in ("acme", "globex"):
        await _consume(db, tenant.id, 9, T0 + timedelta(days=3), customer=key)
    await _consume(db, tenant.id, 2, feb + timedelta(days=1), customer="globex")  # tells globex's
    await scan_due(db, at=feb + timedelta(minutes=1))  # tells acme's
    told = {p["customer"]["key"]: p for _, p in await _emitted(db, tenant.id, notices.PERIOD_RESET)}
    same = {"usage", "included", "soft_limit", "hard_limit", "balance", "period_start", "period_end",
            "previous_period_start", "previous_usage"}
    assert {k: v for k, v in told["globex"].items() if k in same} == {k: v for k, v in told["acme"].items() if k in same}
    assert (told["acme"]["usage"], told["acme"]["soft_limit"], told["acme"]["balance"]) == (0, 10, 10)


async def test_a_reset_told_by_ingest_carries_the_opening_numbers(db, tenant):
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await _catalogue(c, subscribed=False, meter="tokens")
    start = datetime.now(UTC) - timedelta(days=45)  # monthly periods from here: one is over
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=12, time=(start + timedelta(days=3)).isoformat())]))
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6)]))
    [(_, reset)] = await _emitted(db, tenant.id, notices.PERIOD_RESET)
    assert (reset["previous_usage"], reset["usage"], reset["balance"]) == (12, 0, 10)


async def test_a_reset_told_by_a_consume_over_http_carries_the_opening_numbers(db, tenant):
    """The first consume of a period through POST /v1/check (its batched path) tells the reset with
    the period's opening numbers, not the 6 it consumed."""
    c = tenant.client
    await _catalogue(c, subscribed=False)
    start = datetime.now(UTC) - timedelta(days=45)  # monthly periods from here: one is over
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    await _consume(db, tenant.id, 12, start + timedelta(days=3))
    assert (await _check(c, 6))["usage"] == 6
    [(_, reset)] = await _emitted(db, tenant.id, notices.PERIOD_RESET)
    assert (reset["previous_usage"], reset["usage"], reset["balance"]) == (12, 0, 10)


async def test_the_scan_tells_overage_carried_in_even_once_a_check_fixed_it(db, tenant):
    """Overage carried into February is its opening usage, also when a check looked at February
    (and fixed the carry into its counter) before the scan told the reset."""
    c = tenant.client
    await feature(c, "tokens")
    await plan(c, "starter", [metered("tokens", 10, 10, 15) | {"overage_at_reset": "carry"}])
    await customer(c, "acme")
    async with db.transaction() as s:
        await subscriptions.create(s, tenant.id, SubscriptionCreate(customer="acme", plan="starter"),
                                   actor="test", at=T0)
    await _consume(db, tenant.id, 12, T0 + timedelta(days=3))
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    async with db.transaction() as s:
        await checks.check(s, tenant.id, checks.CheckRequest("acme", "tokens"), at=feb + timedelta(seconds=30))
    await scan_due(db, at=feb + timedelta(minutes=1))
    [(_, reset)] = await _emitted(db, tenant.id, notices.PERIOD_RESET)
    assert (reset["previous_usage"], reset["usage"], reset["balance"]) == (12, 2, 8)


async def _carrying_catalogue(c: Any, **feature_extra: Any) -> None:
    """As `_catalogue`, unsubscribed, with overage carried into the next period."""
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "thresholds": THRESHOLDS}), 201)
    await feature(c, "tokens", **feature_extra)
    await plan(c, "starter", [metered("tokens", 10, 10, 15) | {"overage_at_reset": "carry"}])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)


async def _over_last_period(c: Any, db: Database, tenant_id: str) -> None:
    """acme on the carrying starter since 45 days ago, 12 used in its first period (2 over):
    the period now began with 2 carried in."""
    start = datetime.now(UTC) - timedelta(days=45)
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    await _consume(db, tenant_id, 12, start + timedelta(days=3))


async def test_a_first_consume_over_carried_overage_tells_the_reset_before_its_crossings(db, tenant):
    """February's first consume, on top of 2 carried in, tells the reset first; the scan adds none."""
    c = tenant.client
    await _carrying_catalogue(c)
    async with db.transaction() as s:
        await subscriptions.create(s, tenant.id, SubscriptionCreate(customer="acme", plan="starter"),
                                   actor="test", at=T0)
    await _consume(db, tenant.id, 12, T0 + timedelta(days=3))
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    await _consume(db, tenant.id, 6, feb + timedelta(days=1))
    await scan_due(db, at=feb + timedelta(days=1, minutes=1))
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["50%", "80%", "100%", "overdraft_started", "period_reset", "50%", "80%"]
    reset = found[4][1]
    assert (reset["previous_usage"], reset["usage"], reset["balance"]) == (12, 2, 8)


async def test_a_first_consume_after_a_check_fixed_the_carry_tells_the_reset(db, tenant):
    """A consume crossing nothing still tells the reset once a check has fixed the carry."""
    c = tenant.client
    await _carrying_catalogue(c)
    await _over_last_period(c, db, tenant.id)
    assert (await _check(c, consume=False))["usage"] == 2
    await _check(c)
    [(_, reset)] = await _emitted(db, tenant.id, notices.PERIOD_RESET)
    assert (reset["previous_usage"], reset["usage"], reset["balance"]) == (12, 2, 8)


async def test_a_first_consume_after_a_check_fixed_the_carry_tells_the_reset_before_its_crossings(db, tenant):
    """Fixed by a check or not, the carry is where the period's usage starts from."""
    c = tenant.client
    await _carrying_catalogue(c)
    await _over_last_period(c, db, tenant.id)
    await _check(c, consume=False)
    await _check(c, 6)
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["50%", "80%", "100%", "overdraft_started", "period_reset", "50%", "80%"]
    assert found[4][1]["usage"] == 2


async def _over_last_period_by_events(c: Any) -> None:
    """As `_over_last_period`, the 12 reported by events (late, for the period already over)."""
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await _carrying_catalogue(c, meter="tokens")
    start = datetime.now(UTC) - timedelta(days=45)
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=12, time=(start + timedelta(days=3)).isoformat())]))


async def test_first_events_after_a_check_fixed_the_carry_tell_the_reset_before_their_crossings(db, tenant):
    """Ingest, like a consume, counts a move from the carry as the period's first usage."""
    c = tenant.client
    await _over_last_period_by_events(c)
    await _check(c, consume=False)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6)]))
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["period_reset", "50%", "80%"]
    assert (found[0][1]["previous_usage"], found[0][1]["usage"]) == (12, 2)


async def test_first_events_over_carried_overage_cross_from_the_carry(db, tenant):
    """Events that are the period's first usage count from the 2 carried in: 6 more reach 80 %."""
    c = tenant.client
    await _over_last_period_by_events(c)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6)]))
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["period_reset", "50%", "80%"]
    assert [p["usage"] for _, p in found] == [2, 8, 8]


async def test_first_events_over_carried_overage_with_a_grant_cross_from_the_carry(db, tenant):
    """With a grant in play (the threshold numbers come from the grants' replay), events that are
    the period's first usage still count from the carry."""
    c = tenant.client
    await _over_last_period_by_events(c)
    await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 10}), 201)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=14)]))
    found = await _emitted(db, tenant.id, *USAGE_TYPES)
    assert _labels(found) == ["50%", "80%"]
    assert [(p["usage"], p["soft_limit"]) for _, p in found] == [(16, 20), (16, 20)]


async def test_first_events_after_a_reset_that_kept_the_overage_cross_from_it(db, tenant):
    """A usage reset that keeps the 2 over: the new row's first events count from them."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await _catalogue(c, subscribed=False, meter="tokens")
    await ok(await c.post("/v1/customers/acme/entitlements", json=metered("tokens", 10, 10, 15)), 201)
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=12)]))
    await ok(await c.post("/v1/customers/acme/entitlements/tokens/reset", json={"preserve_overage": True}))
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6)]))
    found = await _emitted(db, tenant.id, *USAGE_TYPES)
    assert _labels(found) == ["50%", "80%", "100%", "overdraft_started", "50%", "80%"]
    assert [p["usage"] for _, p in found[4:]] == [8, 8]


async def test_a_first_committed_reservation_over_carried_overage_tells_the_reset_before_its_crossings(db, tenant):
    """A hold fixes the carry; its commit is the period's first usage and tells the reset first."""
    c = tenant.client
    await _carrying_catalogue(c)
    await _over_last_period(c, db, tenant.id)
    now = utcnow()
    async with db.transaction() as s:
        held = await reservations.create(
            s, tenant.id, reservations.ReservationRequest("acme", "tokens", D(6), ttl_seconds=600), at=now
        )
        assert held.reservation is not None
        await reservations.commit(s, tenant.id, held.reservation.id, D(6), at=now + timedelta(seconds=1))
    found = await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET)
    assert _labels(found) == ["50%", "80%", "100%", "overdraft_started", "period_reset", "50%", "80%"]
    assert found[4][1]["usage"] == 2


async def test_a_request_larger_than_the_whole_cap_does_not_reach_it(db, tenant):
    """Refusing more than the limit itself says nothing of where usage stands: the period's one
    hard_limit_reached stays for when usage gets there."""
    c = tenant.client
    await _catalogue(c)
    await _check(c, 2)
    assert (await _check(c, 16))["decision"] == "deny"
    assert await _emitted(db, tenant.id, notices.HARD_LIMIT_REACHED) == []
    await _check(c, 13)  # exactly to the cap
    assert [t for t, _ in await _emitted(db, tenant.id, notices.HARD_LIMIT_REACHED)] == [notices.HARD_LIMIT_REACHED]


async def test_refused_consume_at_the_cap_reaches_it_once_and_denials_once_an_hour(db, tenant):
    """A customer hammering a denied feature makes one usage_denied an hour, not one per request."""
    c = tenant.client
    await _catalogue(c)
    await _check(c, 14)
    for _ in range(20):
        assert (await _check(c, 2))["decision"] == "deny"
    found = await _emitted(db, tenant.id, notices.HARD_LIMIT_REACHED, notices.USAGE_DENIED)
    assert [t for t, _ in found] == [notices.HARD_LIMIT_REACHED, notices.USAGE_DENIED]
    denied = found[1][1]
    assert (denied["quantity"], denied["reason"], denied["usage"], denied["consume"]) == (2, "hard_limit", 14, True)
    async with db.transaction(readonly=True) as s:
        entitlement_id = await s.scalar(select(CustomerEntitlement.id))
    feature = await ok(await c.get("/v1/features/tokens"))
    # named as every usage event names its feature and entitlement
    assert (denied["entitlement_id"], denied["feature"]["name"]) == (entitlement_id, feature["name"])
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme"}))
    assert len(denials["items"]) == 20


async def test_ingested_events_cross_thresholds(db, tenant):
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await _catalogue(c, meter="tokens")
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=4), event("acme-1", tokens=2)]))
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=5)]))
    found = await _emitted(db, tenant.id, *USAGE_TYPES)
    assert _labels(found) == ["50%", "80%", "100%", "overdraft_started"]
    assert [p["usage"] for _, p in found] == [6, 11, 11, 11]


async def test_events_reported_late_for_a_period_already_over_tell_nothing(db, tenant):
    """Last month's usage arriving now moves last month's counter, but warns of nothing (its
    limits can no longer be reached) and tells of no reset; this month's usage still does."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await _catalogue(c, subscribed=False, meter="tokens")
    start = datetime.now(UTC) - timedelta(days=45)  # monthly periods from here: one is over
    await subscribe(c, "acme", "starter", starts_at=start.isoformat())
    late = (start + timedelta(days=3)).isoformat()
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=12, time=late)]))
    assert await _emitted(db, tenant.id, *USAGE_TYPES, notices.PERIOD_RESET) == []
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=6)]))
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["50%"]


async def _seat_churn(db, tenant, *, hard: int, first: tuple[str, ...], again: str) -> None:  # type: ignore[no-untyped-def]
    """acme with two paid seats and a cap: activate `first` in turn, free "c", then `again`."""
    c = tenant.client
    await feature(c, "seats")
    await plan(c, "team", [{"feature": "seats", "kind": "seats", "included": 2, "hard_limit": hard}])
    await customer(c, "acme")
    await subscribe(c, "acme", "team")
    at = utcnow()
    async with db.transaction() as s:
        for item in first:
            await seats.activate(s, tenant.id, "acme", "seats", item, at=at)
        await seats.release(s, tenant.id, "acme", "seats", "c", at=at)
        await seats.activate(s, tenant.id, "acme", "seats", again, at=at + timedelta(seconds=1))


async def test_seat_overdraft_once_per_crossing(db, tenant):
    """Going above the paid seats, back under and above again: two notifications."""
    await _seat_churn(db, tenant, hard=4, first=("a", "b", "c", "c"), again="d")
    found = await _emitted(db, tenant.id, notices.SEAT_OVERDRAFT)
    assert [(p["item"], p["active"], p["soft_limit"]) for _, p in found] == [("c", 3, 2), ("d", 3, 2)]


async def test_filling_the_last_seat_reaches_the_hard_limit_each_time(db, tenant):
    """Two paid, cap three: the third seat is told of; freeing one and filling it again, again."""
    await _seat_churn(db, tenant, hard=3, first=("a", "b", "c", "c", "d"), again="e")  # "d" is denied
    found = await _emitted(db, tenant.id, notices.HARD_LIMIT_REACHED)
    assert [(p["item"], p["active"], p["hard_limit"]) for _, p in found] == [("c", 3, 3), ("e", 3, 3)]


async def test_an_expired_reservation_is_told_of_once(db, tenant):
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    async with db.transaction() as s:
        held = await reservations.create(
            s, tenant.id, reservations.ReservationRequest("acme", "tokens", D(3), ttl_seconds=60), at=T0
        )
    assert held.reservation is not None
    for minutes in (2, 3):
        await _consume(db, tenant.id, 1, T0 + timedelta(minutes=minutes))
    found = await _emitted(db, tenant.id, notices.RESERVATION_EXPIRED)
    assert [(p["reservation_id"], p["quantity"]) for _, p in found] == [(held.reservation.id, 3)]


async def test_a_silent_chargers_reservation_is_told_of_by_the_scan_alone(db, tenant):
    """A hold nobody touches again is told of once by the worker's scan, and its units go back."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    async with db.transaction() as s:
        held = await reservations.create(
            s, tenant.id, reservations.ReservationRequest("acme", "tokens", D(3), ttl_seconds=60), at=T0
        )
    assert held.reservation is not None
    await scan_due(db, at=T0 + timedelta(seconds=59))
    assert await _emitted(db, tenant.id, notices.RESERVATION_EXPIRED) == []
    for minutes in (2, 3):
        await scan_due(db, at=T0 + timedelta(minutes=minutes))
    found = await _emitted(db, tenant.id, notices.RESERVATION_EXPIRED)
    assert [(p["reservation_id"], p["quantity"], p["expired_at"]) for _, p in found] == [
        (held.reservation.id, 3, "2026-01-01T00:01:00Z")
    ]
    async with db.transaction(readonly=True) as s:
        assert list(await s.scalars(select(EntitlementUsage.reserved))) == [0]


async def test_a_hold_refused_at_the_plug_is_told_with_its_period_as_a_refused_check_is(db, tenant):
    """usage_denied for a refused reservation names the usage period it was refused in."""
    c = tenant.client
    await _catalogue(c)
    body = {"customer": "acme", "feature": "tokens", "quantity": 16, "ttl_seconds": 60}
    refused = await ok(await c.post("/v1/reservations", json=body))
    assert refused["decision"] == "deny" and refused["period_end"] is not None
    found = await _emitted(db, tenant.id, notices.USAGE_DENIED)
    assert [(p["period_start"], p["period_end"]) for _, p in found] == [(refused["period_start"], refused["period_end"])]


async def test_committed_reservation_crosses_thresholds(db, tenant):
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    async with db.transaction() as s:
        held = await reservations.create(
            s, tenant.id, reservations.ReservationRequest("acme", "tokens", D(9), ttl_seconds=600), at=T0
        )
        assert held.reservation is not None
        await reservations.commit(s, tenant.id, held.reservation.id, D(9), at=T0 + timedelta(minutes=1))
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["50%", "80%"]


async def test_grant_expiring_is_told_once_within_its_lead_time(db, tenant):
    c = tenant.client
    await _catalogue(c)
    now = utcnow()
    async with db.transaction() as s:
        soon = await grants.create(s, tenant.id, customer="acme", feature="tokens", amount=D(5),
                                   expires_at=now + timedelta(hours=48), at=now)
        await grants.create(s, tenant.id, customer="acme", feature="tokens", amount=D(5),
                            expires_at=now + timedelta(days=30), at=now)
    for _ in range(2):
        async with db.transaction() as s:
            await notices.expiring_grants(s, at=now)
    found = await _emitted(db, tenant.id, notices.GRANT_EXPIRING)
    assert [p["grant"]["id"] for _, p in found] == [soon.id]
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": "grant.expiring", "lead_time_seconds": 40 * 86_400}), 201)
    assert await scan_due(db, at=now) == 1  # what the delivery worker runs periodically
    assert await scan_due(db, at=now) == 0


async def test_plan_change_and_grants_tell_of_changed_entitlements(db, tenant):
    c = tenant.client
    sub = await _catalogue(c)
    await ok(await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "pro"}))
    top_up = await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 5}), 201)
    await ok(await c.post(f"/v1/grants/{top_up['id']}/void", json={"reason": "refund"}))
    found = await _emitted(db, tenant.id, notices.CHANGED)
    assert [p["changes"] for _, p in found] == [
        ["provisioned"], ["ended", "provisioned"], ["grant_created"], ["grant_voided"],
    ]
    assert found[1][1]["entitlement"]["included"] == 100 and found[1][1]["feature"]["key"] == "tokens"


async def test_a_scheduled_plan_change_and_cancel_are_told_when_they_take_effect(db, tenant):
    """Scheduling tells what holds now; the boundary tells again, with what holds from then."""
    c = tenant.client
    await _catalogue(c, subscribed=False)
    feb, mar = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    async with db.transaction() as s:
        first = await subscriptions.create(s, tenant.id, SubscriptionCreate(customer="acme", plan="starter"),
                                           actor="test", at=T0)
    async with db.transaction() as s:
        successor = await subscriptions.change_plan(s, tenant.id, first.subscription.id, "pro", when="period_end",
                                                    actor="test", at=T0 + timedelta(days=10))
    scheduled = await _emitted(db, tenant.id, notices.CHANGED)
    assert scheduled[-1][1]["entitlement"]["included"] == 10  # still starter until February
    await scan_due(db, at=feb - timedelta(minutes=1))
    assert len(await _emitted(db, tenant.id, notices.CHANGED)) == len(scheduled)
    for _ in range(2):
        await scan_due(db, at=feb + timedelta(minutes=1))
    took = (await _emitted(db, tenant.id, notices.CHANGED))[len(scheduled):]
    assert [(p["changes"], p["entitlement"]["included"], p["at"]) for _, p in took] == [
        (["took_effect"], 100, "2026-02-01T00:00:00Z")]
    async with db.transaction() as s:
        await subscriptions.cancel(s, tenant.id, successor.subscription.id, when="period_end", actor="test",
                                   at=feb + timedelta(days=3))
    await scan_due(db, at=mar + timedelta(minutes=1))
    ended = (await _emitted(db, tenant.id, notices.CHANGED))[-1][1]
    assert (ended["changes"], ended["entitlement"], ended["at"]) == (["ended"], None, "2026-03-01T00:00:00Z")


async def test_rolled_back_consume_leaves_no_notification(db, tenant):
    """The notification is part of the consume's transaction: no commit, no notification."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as s:
            request = checks.CheckRequest("acme", "tokens", D(12), consume=True)
            await checks.check(s, tenant.id, request, at=T0 + timedelta(days=1))
            raise Boom
    assert await _emitted(db, tenant.id, *USAGE_TYPES) == []
    assert (await _consume(db, tenant.id, 1, T0 + timedelta(days=1))).decision.usage == 1


async def test_rules_crud_and_deleting_the_last_brings_defaults_back(db, tenant):
    c = tenant.client
    await _catalogue(c, rule=False)
    rule = await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "thresholds": [{"type": "percent", "value": 30}]}), 201)
    listed = await ok(await c.get("/v1/notification-rules"))
    assert [r["id"] for r in listed["items"]] == [rule["id"]] and listed["next_cursor"] is None
    patched = await ok(await c.patch(f"/v1/notification-rules/{rule['id']}", json={"enabled": False}))
    assert patched["enabled"] is False
    await _check(c, 4)  # a disabled rule still means "configured": no thresholds at all
    await ok(await c.delete(f"/v1/notification-rules/{rule['id']}"), 204)
    await ok(await c.get(f"/v1/notification-rules/{rule['id']}"), 404)
    await _check(c, 5)  # 9 of 10: the default 80 %
    assert _labels(await _emitted(db, tenant.id, *USAGE_TYPES)) == ["80%"]


async def test_the_scan_notes_period_ends_before_it_tells_and_blocks_no_consume(db, tenant, backend, monkeypatch):
    """The live counters the scan writes are committed before it starts telling resets, so a
    consume of a period in progress never waits for the telling (PostgreSQL: row locks)."""
    c = tenant.client
    await _catalogue_at_t0(c, db, tenant.id)
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    await _consume(db, tenant.id, 9, T0 + timedelta(days=3))
    await _consume(db, tenant.id, 1, feb + timedelta(days=1))
    telling, release = asyncio.Event(), asyncio.Event()
    tell = resets.tell

    async def paused_tell(*args: Any, **kwargs: Any) -> bool:
        telling.set()
        await release.wait()
        return await tell(*args, **kwargs)

    monkeypatch.setattr(resets, "tell", paused_tell)
    scan = asyncio.create_task(scan_due(db, at=feb + timedelta(days=2)))
    try:
        await asyncio.wait_for(telling.wait(), 10)
        async with db.transaction(readonly=True) as s:
            ends = (await s.scalars(select(EntitlementUsage.period_end).order_by(EntitlementUsage.period_start))).all()
        assert ends == [to_micros(feb), to_micros(datetime(2026, 3, 1, tzinfo=UTC))]
        if backend == "postgresql":  # SQLite's one writer waits for any write transaction
            assert (await asyncio.wait_for(_consume(db, tenant.id, 1, feb + timedelta(days=2)), 10)).decision
    finally:
        release.set()
        await scan
    assert len(await _emitted(db, tenant.id, notices.PERIOD_RESET)) == 1
