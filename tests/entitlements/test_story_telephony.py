"""Story 4: prepaid mobile bundles. A monthly bundle of 10 GB and 300 minutes, add-on bundles
with their own expiry that burn first because they expire first, unused monthly data rolling
over up to 2 GB, data denied at zero in real time, and usage records arriving late from the
network landing in the period they happened in."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from allotment.types import utcnow
from tests.entitlements.catalogue import feature, ok, plan, subscribe
from tests.helpers import event, meter

GB = 1000  # data is metered in MB


async def _operator(c: Any, **subscription: Any) -> None:
    """The monthly bundle, and a subscriber whose SIM reports usage through the network."""
    await ok(await c.post("/v1/meters", json=meter("data", event_type="data", value_property="$.mb")), 201)
    await ok(await c.post("/v1/meters", json=meter("minutes", event_type="call", value_property="$.minutes")), 201)
    await feature(c, "data", meter="data", unit="MB")
    await feature(c, "minutes", meter="minutes", unit="minute")
    bundle = {"kind": "metered", "usage_period": "MONTH"}
    await plan(c, "monthly", [
        {**bundle, "feature": "data", "included": 10 * GB, "hard_limit": 10 * GB, "included_rollover": 2 * GB},
        {**bundle, "feature": "minutes", "included": 300, "hard_limit": 300},
    ])
    body = {"key": "sub-1", "name": "Subscriber", "subject_keys": ["sim-4915100000001"]}
    await ok(await c.post("/v1/customers", json=body), 201)
    await subscribe(c, "sub-1", "monthly", **subscription)


async def _network(c: Any, *records: tuple[str, float, datetime]) -> None:
    """Usage records as the network sends them: (data MB or call minutes, amount, when it happened)."""
    events = [event("sim-4915100000001", "data" if kind == "mb" else "call", time=at.isoformat(), **{kind: amount})
              for kind, amount, at in records]
    answer = await ok(await c.post("/v1/events", json=events))
    assert answer["accepted"] == len(events), answer


async def _entitlement(c: Any, key: str) -> Any:
    return await ok(await c.get(f"/v1/customers/sub-1/entitlements/{key}"))


async def _check(c: Any, key: str, quantity: float = 1) -> Any:
    return await ok(await c.post("/v1/check", json={"customer": "sub-1", "feature": key, "quantity": quantity}))


async def test_an_add_on_burns_before_the_monthly_bundle_and_data_is_denied_at_zero(tenant):
    """A 1 GB add-on bought mid-month expires before the month ends, so the data used after it
    comes out of it first; once both are spent the next data session is refused."""
    c = tenant.client
    now = utcnow()
    await _operator(c, starts_at=(now - timedelta(days=3)).isoformat())
    grants = "/v1/customers/sub-1/entitlements/data/grants"
    week = (now + timedelta(days=7)).isoformat()
    add_on = await ok(await c.post(grants, json={"amount": GB, "expires_at": week}), 201)
    now = utcnow()  # the sessions below are after the purchase: the add-on's to pay
    await _network(c, ("mb", 600, now), ("minutes", 12, now))
    seen = await _entitlement(c, "data")
    assert [(g["id"], g["balance"]) for g in seen["grants"]] == [(add_on["id"], 400)]
    assert (seen["usage"], seen["balance"], seen["hard_limit"]) == (600, 10_400, 11 * GB)
    await _network(c, ("mb", 10_400, now))
    denied = await _check(c, "data")
    assert (denied["decision"], denied["reason"], denied["balance"]) == ("deny", "hard_limit", 0)
    calls = await _check(c, "minutes", 288)
    assert (calls["decision"], calls["usage"], calls["balance"]) == ("allow", 12, 288)


async def test_late_records_land_in_their_own_period_and_move_what_rolls_over(tenant):
    """The month turned two hours ago. Records of the minutes and hours before now count in
    this month; one stamped before the turn and arriving after it counts in last month, whose
    unused data (of 10 GB and the 2 GB rolled into it) then rolls over that much less."""
    c = tenant.client
    now = utcnow().replace(microsecond=0)
    turn = now - timedelta(hours=2)
    await _operator(c, starts_at=(now - timedelta(days=40)).isoformat(), billing_anchor=turn.isoformat(),
                    time_zone="Europe/Berlin")
    await _network(c, ("mb", 11 * GB, turn - timedelta(days=10)), ("minutes", 250, turn - timedelta(days=10)))
    first = await _check(c, "data")
    assert (datetime.fromisoformat(first["period_start"]), first["usage"], first["hard_limit"]) == (turn, 0, 11 * GB)
    await _network(c, ("mb", 400, turn - timedelta(minutes=30)), ("mb", 100, turn + timedelta(minutes=15)),
                   ("mb", 50, now - timedelta(minutes=5)), ("minutes", 7, turn - timedelta(minutes=40)),
                   ("minutes", 3, now - timedelta(hours=1)))
    data = await _entitlement(c, "data")
    assert (data["usage"], data["rolled_over"], data["hard_limit"], data["balance"]) == (150, 600, 10_600, 10_450)
    assert (await _check(c, "data", 10_450))["decision"] == "allow"
    last = await _check(c, "data", 10_451)
    assert (last["decision"], last["hard_limit"]) == ("deny", 10_600)
    minutes = await _entitlement(c, "minutes")
    assert (minutes["usage"], minutes["balance"]) == (3, 297)
