"""Prepaid credit: a top-up arms the warnings again, and each crossing is told once.

An EV charging driver's kWh never reset: credit comes only from grants, so the whole life of
the entitlement is one period. A threshold told once must still be told again after a top-up
lifts it above the usage, or the driver is warned about a low balance only once, ever.
"""

from __future__ import annotations

import asyncio
from typing import Any

from standardwebhooks import Webhook

from allotment.db import Database
from allotment.entitlements import notices
from allotment.notifications.lanes import Lanes
from allotment.types import utcnow
from tests.conftest import Tenant
from tests.entitlements.catalogue import customer, feature, ok, plan, subscribe
from tests.notifications.conftest import drain, endpoint
from tests.notifications.receiver import Receiver

USAGE_TYPES = (notices.THRESHOLD_REACHED, notices.OVERDRAFT_STARTED, notices.HARD_LIMIT_REACHED)


async def _prepaid_driver(tenant: Tenant, receiver: Receiver) -> dict[str, Any]:
    """A driver on a prepaid plan (nothing included, capped at what grants hold) with 50 kWh of
    credit, a rule warning at 80 %, and a webhook endpoint; returns the endpoint."""
    c = tenant.client
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "thresholds": [{"type": "percent", "value": 80}]}), 201)
    await feature(c, "kwh", unit="kWh")
    await plan(c, "prepaid", [{"feature": "kwh", "kind": "metered", "usage_period": "NONE", "included": 0,
                               "soft_limit": 0, "hard_limit": 0}])
    await customer(c, "driver")
    await subscribe(c, "driver", "prepaid")
    await _top_up(c, 50)
    return await endpoint(tenant, receiver.url)


async def _top_up(c: Any, kwh: float) -> None:
    await ok(await c.post("/v1/customers/driver/entitlements/kwh/grants", json={"amount": kwh}), 201)


async def _session(c: Any, held: float, charged: float) -> dict[str, Any]:
    """A charging session: hold `held` kWh at the plug, then commit what was charged."""
    body = {"customer": "driver", "feature": "kwh", "quantity": held, "ttl_seconds": 600}
    hold = await ok(await c.post("/v1/reservations", json=body), 201)
    assert hold["decision"] == "allow", hold
    settled = f"/v1/reservations/{hold['reservation']['id']}/commit"
    return await ok(await c.post(settled, json={"quantity": charged}))  # type: ignore[no-any-return]


async def _consume(c: Any, kwh: float) -> dict[str, Any]:
    body = {"customer": "driver", "feature": "kwh", "quantity": kwh, "consume": True}
    return await ok(await c.post("/v1/check", json=body))  # type: ignore[no-any-return]


async def _told(db: Database, sender: Lanes, receiver: Receiver, hook: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(type, threshold label, level, usage) of each usage webhook delivered, signature verified."""
    await drain(db, sender, at=utcnow())
    messages = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.received]
    return [(m["type"], m["data"].get("threshold", {}).get("label"), m["data"].get("threshold", {}).get("level"),
             m["data"]["usage"]) for m in messages if m["type"] in USAGE_TYPES]


async def test_a_top_up_warns_the_driver_again_at_80_percent_of_the_new_balance(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """41.1 of 50 kWh warns; after a 50 kWh top-up, 85.1 of 100 warns again; using more does not."""
    c = tenant.client
    hook = await _prepaid_driver(tenant, receiver)
    assert (await _session(c, 45, 41.1))["usage"] == 41.1
    assert await _told(db, sender, receiver, hook) == [(notices.THRESHOLD_REACHED, "80%", 40, 41.1)]
    await _top_up(c, 50)
    await _session(c, 50, 44)
    await _consume(c, 5)  # still above 80 kWh: nothing new to tell
    assert await _told(db, sender, receiver, hook) == [
        (notices.THRESHOLD_REACHED, "80%", 40, 41.1), (notices.THRESHOLD_REACHED, "80%", 80, 85.1),
    ]


async def test_running_out_is_told_again_after_a_top_up_and_once_however_often_refused(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """Spending all 50 kWh reaches the cap; a top-up and spending it all reaches it again, and
    charges refused at the empty balance do not tell it twice."""
    c = tenant.client
    hook = await _prepaid_driver(tenant, receiver)
    await _consume(c, 50)
    await _top_up(c, 50)
    await _consume(c, 50)
    for _ in range(3):
        assert (await _consume(c, 1))["decision"] == "deny"
    assert await _told(db, sender, receiver, hook) == [
        (notices.THRESHOLD_REACHED, "80%", 40, 50), (notices.HARD_LIMIT_REACHED, None, None, 50),
        (notices.THRESHOLD_REACHED, "80%", 80, 100), (notices.HARD_LIMIT_REACHED, None, None, 100),
    ]


async def test_concurrent_charges_after_a_top_up_tell_the_new_crossing_once(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """Many charges racing past the re-armed 80 % level make one warning, not one per writer."""
    c = tenant.client
    hook = await _prepaid_driver(tenant, receiver)
    await _consume(c, 41)
    await _top_up(c, 50)
    answers = await asyncio.gather(*(_consume(c, 5) for _ in range(10)))
    assert [a["decision"] for a in answers] == ["allow"] * 10
    told = await _told(db, sender, receiver, hook)
    assert [(t, label, level) for t, label, level, _ in told] == [
        (notices.THRESHOLD_REACHED, "80%", 40), (notices.THRESHOLD_REACHED, "80%", 80),
    ]
    assert 80 <= told[1][3] < 85


async def test_a_balance_threshold_warns_when_little_credit_is_left_and_again_after_a_top_up(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """"5 kWh left" is told when the credit falls to 5, at whatever usage that is: 45 of 50,
    then 65 of 70 after a 20 kWh top-up."""
    c = tenant.client
    hook = await _prepaid_driver(tenant, receiver)
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": "entitlement.threshold_reached", "thresholds": [{"type": "balance", "value": 5}]}), 201)
    await _consume(c, 41)
    await _consume(c, 5)
    await _top_up(c, 20)
    await _consume(c, 20)
    assert await _told(db, sender, receiver, hook) == [
        (notices.THRESHOLD_REACHED, "80%", 40, 41), (notices.THRESHOLD_REACHED, "5 left", 45, 46),
        (notices.THRESHOLD_REACHED, "80%", 56, 66), (notices.THRESHOLD_REACHED, "5 left", 65, 66),
    ]
