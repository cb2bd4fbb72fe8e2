"""Story 3: prepaid EV charging. Drivers prepay credit (top-ups are grants); a session
reserves 30 kWh at the plug and is refused when the credit cannot cover it; the charger commits
what it delivered and the rest goes back; a silent charger's hold expires. (The low-balance
warning, and its re-arming by a top-up, are in tests/notifications/test_prepaid.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.db import Database
from allotment.entitlements import grants, notices, reservations
from allotment.errors import Conflict
from tests.entitlements.catalogue import customer, feature, ok, plan, subscribe

T0 = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
GRANTS = "/v1/customers/driver/entitlements/{}/grants"


async def _prepaid(c: Any, unit: str = "kwh", **subscription: Any) -> None:
    """A driver whose credit comes only from top-ups: nothing included, capped at what they hold."""
    await feature(c, unit)
    await plan(c, "prepaid", [{"feature": unit, "kind": "metered", "usage_period": "NONE", "included": 0,
                               "soft_limit": 0, "hard_limit": 0}])
    await customer(c, "driver")
    await subscribe(c, "driver", "prepaid", **subscription)


async def _top_up(c: Any, amount: float | str, unit: str = "kwh") -> Any:
    return await ok(await c.post(GRANTS.format(unit), json={"amount": amount}), 201)


async def _plug_in(c: Any, quantity: float | str = 30, unit: str = "kwh") -> Any:
    body = {"customer": "driver", "feature": unit, "quantity": quantity, "ttl_seconds": 900}
    resp = await c.post("/v1/reservations", json=body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def test_a_session_is_refused_at_the_plug_until_a_top_up_covers_30_kwh(tenant):
    """25 kWh of credit cannot cover a 30 kWh hold; after a 20 kWh top-up it can, the charger
    commits 22.4 and 22.6 stay, which again cannot cover the next session's 30."""
    c = tenant.client
    await _prepaid(c)
    first = await _top_up(c, 25)
    refused = await _plug_in(c)
    assert (refused["decision"], refused["reason"], refused["reservation"], refused["balance"]) == (
        "deny", "hard_limit", None, 25)
    second = await _top_up(c, 20)
    held = await _plug_in(c)
    assert (held["decision"], held["reserved"], held["balance"]) == ("allow", 30, 15)
    settled = await ok(await c.post(f"/v1/reservations/{held['reservation']['id']}/commit", json={"quantity": 22.4}))
    assert (settled["usage"], settled["reserved"], settled["balance"]) == (22.4, 0, 22.6)
    page = await ok(await c.get("/v1/customers/driver/entitlements/kwh"))
    assert [(g["id"], g["balance"]) for g in page["grants"]] == [(first["id"], 2.6), (second["id"], 20)]
    assert (await _plug_in(c))["decision"] == "deny"
    denials = (await ok(await c.get("/v1/denials", params={"customer": "driver"})))["items"]
    assert [(d["feature"], d["quantity"], d["reason"]) for d in denials] == [("kwh", 30, "hard_limit")] * 2


async def test_credit_in_money_is_held_and_settled_exactly(tenant):
    """A driver prepaying euros: the session holds 30 kWh at 0.39 EUR, the charger settles
    22.4 kWh worth, and the balance is exact to the tenth of a cent."""
    c = tenant.client
    await _prepaid(c, "eur")
    await _top_up(c, "50.00", "eur")
    held = await _plug_in(c, "11.70", "eur")
    assert (held["decision"], held["balance"]) == ("allow", 38.3)
    settled = await ok(await c.post(f"/v1/reservations/{held['reservation']['id']}/commit",
                                    json={"quantity": "8.736"}))
    assert (settled["usage"], settled["balance"]) == (8.736, 41.264)
    page = await ok(await c.get("/v1/customers/driver/entitlements/eur"))
    assert (page["usage"], page["balance"]) == (8.736, 41.264)


class _Chargers:
    """The driver's sessions, driven through the services at chosen instants."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db, self.tenant_id = db, tenant_id

    async def plug_in(self, at: datetime, quantity: int = 30) -> reservations.Held:
        request = reservations.ReservationRequest("driver", "kwh", Decimal(quantity), ttl_seconds=900)
        async with self.db.transaction() as s:
            return await reservations.create(s, self.tenant_id, request, at=at)

    async def commit(self, held: reservations.Held, quantity: str, at: datetime) -> reservations.Settled:
        assert held.reservation is not None
        async with self.db.transaction() as s:
            return await reservations.commit(s, self.tenant_id, held.reservation.id, Decimal(quantity), at=at)


async def test_a_silent_chargers_hold_expires_and_the_driver_charges_elsewhere(tenant, db):
    """40 kWh of credit; a charger holds 30 and goes silent. Another charger is refused while
    the hold lasts and served once it expires; the silent charger's late commit is refused,
    so the driver pays only for the energy the second charger delivered."""
    c = tenant.client
    await _prepaid(c, starts_at=T0.isoformat())
    async with db.transaction() as s:
        await grants.create(s, tenant.id, customer="driver", feature="kwh", amount=Decimal(40), at=T0)
    chargers = _Chargers(db, tenant.id)
    silent = await chargers.plug_in(T0)
    assert silent.decision.decision == "allow"
    assert (await chargers.plug_in(T0 + timedelta(minutes=14, seconds=59))).decision.decision == "deny"
    elsewhere = await chargers.plug_in(T0 + timedelta(minutes=15))
    assert (elsewhere.decision.decision, elsewhere.reserved) == ("allow", 30)
    with pytest.raises(Conflict, match="expired"):
        await chargers.commit(silent, "30", T0 + timedelta(minutes=16))
    settled = await chargers.commit(elsewhere, "22.4", T0 + timedelta(minutes=29))  # a fast charger
    assert (settled.usage, settled.reserved, settled.standing.balance) == (Decimal("22.4"), 0, Decimal("17.6"))
    told = (await ok(await c.get("/v1/notifications", params={"type": notices.RESERVATION_EXPIRED})))["items"]
    assert [(n["payload"]["reservation_id"], n["payload"]["quantity"]) for n in told] == [
        (silent.reservation.id, 30)]  # type: ignore[union-attr]
