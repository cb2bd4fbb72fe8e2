"""Story 2, served: 100 seats bought, overdraft to 120, floating leases, the overdraft report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.notifications.receiver import wait_until
from tests.scenarios.conftest import Vendor

pytestmark = pytest.mark.slow  # a real server per test

SEATS = "/v1/customers/acme/seats/seats"
SEAT_TYPES = ("seat.overdraft", "entitlement.hard_limit_reached", "entitlement.usage_denied")


def _licences(v: Vendor) -> str:
    """Acme buys 100 floating seats (five-minute leases) with overdraft up to 120; returns the
    secret of the vendor's webhook endpoint."""
    secret = v.endpoint()
    v.ok("POST", "/v1/features", 201, json={"key": "seats", "name": "Desktop seats", "unit": "seat"})
    v.ok("POST", "/v1/plans", 201, json={"key": "business", "name": "Business", "entitlements": [
        {"feature": "seats", "kind": "seats", "included": 100, "soft_limit": 100, "hard_limit": 120,
         "lease_ttl_seconds": 300}]})
    v.ok("POST", "/v1/plans/business/publish")
    v.ok("POST", "/v1/customers", 201, json={"key": "acme", "name": "Acme"})
    v.ok("POST", "/v1/subscriptions", 201, json={"customer": "acme", "plan": "business"})
    return secret


def _activate(v: Vendor, item: str, **lease: Any) -> Any:
    return v.ok("POST", f"{SEATS}/activate", json={"item": item, **lease})


def test_seats_past_the_paid_100_are_flagged_and_the_121st_is_denied_and_told(vendor: Vendor) -> None:
    """Seats 101-120 are allowed in overdraft, the 121st is refused and listed; the vendor's
    endpoint is told each step once, naming the customer, the feature and the entitlement."""
    secret = _licences(vendor)
    answers = [_activate(vendor, f"user-{n}") for n in range(1, 122)]
    assert [a["decision"] for a in answers] == ["allow"] * 100 + ["allow_overdraft"] * 20 + ["deny"]
    holders = vendor.ok("GET", SEATS, params={"limit": 1000})["items"]
    assert [h["item"] for h in holders if h["in_overdraft"]] == [f"user-{n}" for n in range(101, 121)]
    denials = vendor.ok("GET", "/v1/denials", params={"customer": "acme", "feature": "seats"})["items"]
    assert [(d["item"], d["reason"]) for d in denials] == [("user-121", "hard_limit")]
    told = vendor.told(secret, until="entitlement.usage_denied")
    [provisioned] = [m["data"]["entitlement"]["id"] for m in told if m["type"] == "entitlement.changed"]
    seat_notes = [m["data"] for m in told if m["type"] in SEAT_TYPES]
    assert [(d["item"], d["usage"], d["soft_limit"], d["hard_limit"]) for d in seat_notes] == [
        ("user-101", 101, 100, 120), ("user-120", 120, 100, 120), ("user-121", 120, 100, 120)]
    assert {(d["customer"]["key"], d["feature"]["key"], d["feature"].get("name"), d.get("entitlement_id"))
            for d in seat_notes} == {("acme", "seats", "Desktop seats", provisioned)}


def test_a_crashed_clients_seat_frees_itself_and_the_overdraft_report_shows_the_episode(vendor: Vendor) -> None:
    """All 120 seats held, one by a client that stops heartbeating: once its lease runs out a
    new client gets the seat, the crashed one is told to activate again, and after the extra
    seats are released the report says who ran above 100 seats, how far and for how long."""
    _licences(vendor)
    for n in range(1, 120):
        _activate(vendor, f"user-{n}")
    _activate(vendor, "crashed-laptop", lease_ttl_seconds=1)
    assert _activate(vendor, "user-120")["decision"] == "deny"
    wait_until(lambda: all(h["item"] != "crashed-laptop" for h in vendor.ok("GET", SEATS, params={"limit": 1000})[
        "items"]), seconds=30, what="the crashed client's lease to run out")
    taken = _activate(vendor, "user-120")
    assert (taken["decision"], taken["active"]) == ("allow_overdraft", 120)
    gone = vendor.client.post(f"{SEATS}/heartbeat", json={"item": "crashed-laptop"})
    assert gone.status_code == 409 and "activate it again" in gone.json()["detail"]
    holders = vendor.ok("GET", SEATS, params={"limit": 1000})["items"]
    first_over = min(datetime.fromisoformat(h["activated_at"]) for h in holders if h["in_overdraft"])
    for n in range(101, 121):
        assert vendor.ok("POST", f"{SEATS}/release", json={"item": f"user-{n}"})["active"] == 220 - n
    window = {"from": (first_over - timedelta(hours=1)).isoformat(), "to": (first_over + timedelta(hours=1)).isoformat()}
    [item] = vendor.ok("GET", "/v1/reports/overdraft", params=window)["items"]
    assert (item["customer"], item["feature"], item["peak"], item["peak_overdraft"], item["denials"]) == (
        "acme", "seats", 120, 20, 1)
    [episode] = item["episodes"]
    assert (episode["peak"], episode["peak_overdraft"], episode["ended_at"] is not None) == (120, 20, True)
    assert item["overdraft_seconds"] > 0 and item["overdraft_seat_hours"] > 0
