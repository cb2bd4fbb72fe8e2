"""Story 2: seat licences with overdraft. 100 seats paid, overdraft to 120: seats 101-120 are
allowed and flagged, the 121st is denied where the customer sees it; floating leases are kept
by heartbeats and a crashed client's seat frees itself; the overdraft report says who ran
above the paid seats, how far and for how long."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from allotment.db import Database
from allotment.entitlements import notices, seats
from allotment.errors import Conflict
from allotment.notifications.lanes import Lanes
from allotment.types import utcnow
from tests.conftest import Tenant
from tests.entitlements.catalogue import customer, feature, ok, plan, subscribe
from tests.notifications.conftest import drain, endpoint
from tests.notifications.receiver import Receiver

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LEASE = 300  # a desktop client heartbeats every few minutes; five without one and its seat is free
WORKDAY = 8 * 3600


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


async def _licences(c: Any, *who: str, **subscription: Any) -> None:
    """Each customer buys 100 floating seats with overdraft up to 120."""
    await feature(c, "seats", unit="seat")
    await plan(c, "business", [{"feature": "seats", "kind": "seats", "included": 100, "soft_limit": 100,
                                "hard_limit": 120, "lease_ttl_seconds": LEASE}])
    for key in who:
        await customer(c, key)
        await subscribe(c, key, "business", **subscription)


async def _activate(c: Any, item: str) -> Any:
    return await ok(await c.post("/v1/customers/acme/seats/seats/activate", json={"item": item}))


async def test_seats_101_to_120_are_flagged_once_and_the_121st_is_denied_and_told(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """The vendor is told when acme goes above its paid seats, when it fills the last seat it
    may use and when an activation is refused (naming whom): once each, not once per seat."""
    c = tenant.client
    await _licences(c, "acme")
    hook = await endpoint(tenant, receiver.url)
    answers = [await _activate(c, f"user-{n}") for n in range(1, 122)]
    assert [a["decision"] for a in answers] == ["allow"] * 100 + ["allow_overdraft"] * 20 + ["deny"]
    assert [a["active"] for a in answers[99:]] == list(range(100, 121)) + [120]
    await drain(db, sender, at=utcnow())
    told = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.received]
    seat_types = (notices.SEAT_OVERDRAFT, notices.HARD_LIMIT_REACHED, notices.USAGE_DENIED)
    flags = [(m["type"], m["data"].get("item"), m["data"]["customer"]["key"]) for m in told if m["type"] in seat_types]
    assert flags == [
        (notices.SEAT_OVERDRAFT, "user-101", "acme"), (notices.HARD_LIMIT_REACHED, "user-120", "acme"),
        (notices.USAGE_DENIED, "user-121", "acme")]
    denials = (await ok(await c.get("/v1/denials", params={"customer": "acme", "feature": "seats"})))["items"]
    assert [(d["reason"], d["quantity"], d["item"]) for d in denials] == [("hard_limit", 1, "user-121")]


class _Office:
    """acme's desktop clients, driven through the services at chosen instants; the calls of
    many clients at one instant share a transaction (only to keep the test quick)."""

    def __init__(self, db: Database, tenant_id: str, customer_key: str = "acme") -> None:
        self.db, self.tenant_id, self.customer = db, tenant_id, customer_key

    async def all(self, action: str, items: Iterable[str], at: datetime,
                  ttl: int | None = None) -> list[seats.SeatResult]:
        async with self.db.transaction() as s:
            if action == "activate":
                return [await seats.activate(s, self.tenant_id, self.customer, "seats", item,
                                             lease_ttl_seconds=ttl, at=at) for item in items]
            call = seats.heartbeat if action == "heartbeat" else seats.release
            return [await call(s, self.tenant_id, self.customer, "seats", item, at=at) for item in items]

    async def activate(self, item: str, at: datetime, ttl: int | None = None) -> seats.SeatResult:
        return (await self.all("activate", [item], at, ttl))[0]

    async def heartbeat(self, item: str, at: datetime) -> seats.SeatResult:
        return (await self.all("heartbeat", [item], at))[0]


def users(first: int, last: int, name: str = "user") -> list[str]:
    return [f"{name}-{n}" for n in range(first, last + 1)]


async def test_a_crashed_clients_seat_frees_itself_while_heartbeating_clients_keep_theirs(tenant, db):
    """All 120 seats taken; 119 clients heartbeat every 4 minutes, one crashes. Five minutes
    after its last sign of life a new client gets its seat, the others still hold theirs, and
    the crashed client, restarted, finds the seats full."""
    await _licences(tenant.client, "acme", starts_at=T0.isoformat())
    office = _Office(db, tenant.id)
    assert [r.decision.decision for r in await office.all("activate", users(1, 121), T0)] == (
        ["allow"] * 100 + ["allow_overdraft"] * 20 + ["deny"])
    renewed = await office.all("heartbeat", users(1, 119), minute(4))
    assert {r.expires_at for r in renewed} == {minute(9)}
    assert (await office.activate("user-121", minute(5) - timedelta(seconds=1))).decision.decision == "deny"
    taken = await office.activate("user-121", minute(5))
    assert (taken.decision.decision, taken.active) == ("allow_overdraft", 120)
    with pytest.raises(Conflict, match="user-120"):
        await office.heartbeat("user-120", minute(6))
    restarted = await office.activate("user-120", minute(6))
    assert (restarted.decision.decision, restarted.active) == ("deny", 120)
    await office.all("heartbeat", users(1, 119) + ["user-121"], minute(8))
    assert (await office.heartbeat("user-1", minute(12))).active == 120


async def test_the_overdraft_report_says_who_ran_above_paid_seats_how_far_and_how_long(tenant, db):
    """acme's 100 staff work all day; from 9:00 ten more start (five crash at once, five work
    on to 10:10 with heartbeats); at 10:00 fifteen more fill the 120 seats for a quarter of an
    hour and a 121st is refused. globex stays within its seats and is not listed."""
    c = tenant.client
    await _licences(c, "acme", "globex", starts_at=T0.isoformat())
    acme, globex = _Office(db, tenant.id), _Office(db, tenant.id, "globex")
    await acme.all("activate", users(1, 100, "staff"), T0, ttl=WORKDAY)
    await globex.all("activate", users(1, 100, "staff"), T0, ttl=WORKDAY)
    temps = await acme.all("activate", users(1, 10, "temp"), minute(60))  # temps 6-10 crash at once
    assert {r.decision.decision for r in temps} == {"allow_overdraft"}
    for at in range(64, 190, 4):
        await acme.all("heartbeat", users(1, 5, "temp"), minute(at))
    await acme.all("activate", users(1, 15, "contractor"), minute(120), ttl=WORKDAY)
    assert (await acme.activate("contractor-16", minute(120))).decision.decision == "deny"
    await acme.all("release", users(1, 15, "contractor"), minute(135))
    await acme.all("release", users(1, 5, "temp"), minute(190))
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat()}
    report = await ok(await c.get("/v1/reports/overdraft", params=window))
    assert [(i["customer"], i["feature"], i["kind"]) for i in report["items"]] == [("acme", "seats", "seats")]
    [item] = report["items"]
    assert (item["included"], item["soft_limit"], item["hard_limit"]) == (100, 100, 120)
    assert (item["peak"], item["peak_overdraft"], item["denials"]) == (120, 20, 1)
    # 10 over for 5 minutes, 5 for 55, 20 for 15, 5 for 55: 900 seat-minutes in 2 h 10 min.
    assert (item["overdraft_seconds"], item["overdraft_seat_hours"]) == (130 * 60, 15)
    assert [(datetime.fromisoformat(e["started_at"]), datetime.fromisoformat(e["ended_at"]), e["peak"],
             e["peak_overdraft"]) for e in item["episodes"]] == [(minute(60), minute(190), 120, 20)]
