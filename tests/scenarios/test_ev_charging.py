"""Story 3, served: prepaid EV charging. Sessions hold 30 kWh at the plug, commit what they
delivered, and a silent charger's hold runs out; a low balance asks the driver to top up."""

from __future__ import annotations

from typing import Any

import pytest

from tests.notifications.receiver import wait_until
from tests.scenarios.conftest import Vendor

pytestmark = pytest.mark.slow  # a real server per test

CREDIT = "/v1/customers/driver/entitlements/kwh/grants"


def _prepaid(v: Vendor) -> str:
    """A driver whose credit is only what it tops up, warned when 10 kWh are left; returns the
    secret of the operator's webhook endpoint."""
    secret = v.endpoint()
    v.ok("POST", "/v1/features", 201, json={"key": "kwh", "name": "Energy", "unit": "kWh",
                                            "metadata": {"top_up": {"amount": 50, "price": "19.50", "currency": "EUR"}}})
    v.ok("POST", "/v1/plans", 201, json={"key": "prepaid", "name": "Prepaid", "entitlements": [
        {"feature": "kwh", "kind": "metered", "usage_period": "NONE", "included": 0, "soft_limit": 0, "hard_limit": 0}]})
    v.ok("POST", "/v1/plans/prepaid/publish")
    v.ok("POST", "/v1/customers", 201, json={"key": "driver", "name": "Driver"})
    v.ok("POST", "/v1/subscriptions", 201, json={"customer": "driver", "plan": "prepaid"})
    v.ok("POST", "/v1/notification-rules", 201, json={
        "event_type": "entitlement.threshold_reached", "features": ["kwh"], "thresholds": [{"type": "balance", "value": 10}]})
    return secret


def _plug_in(v: Vendor, kwh: float = 30, ttl: int = 900) -> Any:
    body = {"customer": "driver", "feature": "kwh", "quantity": kwh, "ttl_seconds": ttl}
    resp = v.client.post("/v1/reservations", json=body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def _commit(v: Vendor, held: Any, kwh: float) -> Any:
    return v.ok("POST", f"/v1/reservations/{held['reservation']['id']}/commit", json={"quantity": kwh})


def test_a_driver_charges_is_refused_when_credit_runs_low_and_tops_up(vendor: Vendor) -> None:
    """40 kWh of credit: a session holds 30 and commits 22.4 (the rest goes back); the next 30
    is refused at the plug; a 12 kWh session leaves 5.6, which warns "10 left" and suggests
    a 50 kWh pack; the top-up is a grant, and the next session is served."""
    v = vendor
    secret = _prepaid(v)
    v.ok("POST", CREDIT, 201, json={"amount": 40})
    held = _plug_in(v)
    assert (held["decision"], held["reserved"], held["balance"]) == ("allow", 30, 10)
    settled = _commit(v, held, 22.4)
    assert (settled["usage"], settled["reserved"], settled["balance"]) == (22.4, 0, 17.6)
    refused = _plug_in(v)
    assert (refused["decision"], refused["reason"], refused["reservation"], refused["balance"]) == (
        "deny", "hard_limit", None, 17.6)
    assert _commit(v, _plug_in(v, 15), 12)["balance"] == 5.6
    told = v.told(secret, until=("entitlement.threshold_reached", "upsell.suggested"))
    [low] = [m["data"] for m in told if m["type"] == "entitlement.threshold_reached"]
    assert (low["threshold"]["label"], low["usage"], low["balance"]) == ("10 left", 34.4, 5.6)
    [upsell] = [m["data"]["suggestion"] for m in told if m["type"] == "upsell.suggested"]
    assert (upsell["action"], upsell["top_up"]["count"], upsell["top_up"]["total_price"]) == ("top_up", 1, "19.50")
    v.ok("POST", CREDIT, 201, json={"amount": 50})
    served = _plug_in(v)
    assert (served["decision"], served["balance"]) == ("allow", 25.6)
    denials = v.ok("GET", "/v1/denials", params={"customer": "driver"})["items"]
    assert [(d["feature"], d["quantity"], d["reason"]) for d in denials] == [("kwh", 30, "hard_limit")]


def test_a_silent_chargers_hold_runs_out_and_gives_the_credit_back(vendor: Vendor) -> None:
    """A charger that holds 30 of 40 kWh and goes silent blocks a second 30 kWh session only
    until its hold runs out; its late commit is refused and the operator is told it expired."""
    v = vendor
    secret = _prepaid(v)
    v.ok("POST", CREDIT, 201, json={"amount": 40})
    silent = _plug_in(v, ttl=1)
    assert silent["decision"] == "allow"
    path = f"/v1/reservations/{silent['reservation']['id']}"
    wait_until(lambda: v.ok("GET", path)["status"] == "expired", seconds=30, what="the silent charger's hold to expire")
    other = _plug_in(v)
    assert (other["decision"], other["balance"]) == ("allow", 10)
    late = v.client.post(f"{path}/commit", json={"quantity": 30})
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert _commit(v, other, 22.4)["balance"] == 17.6
    [expired] = [m["data"] for m in v.told(secret, until="reservation.expired") if m["type"] == "reservation.expired"]
    assert (expired["reservation_id"], expired["quantity"], expired["customer"]["key"]) == (
        silent["reservation"]["id"], 30, "driver")


def test_a_driver_refused_while_a_silent_charger_holds_the_credit_is_offered_a_top_up(vendor: Vendor) -> None:
    """A charger holding 30 of 40 kWh has gone silent; the next charger refuses the driver's
    30 kWh session at the plug, and the operator is told to offer a 50 kWh pack: 30 held and
    30 more wanted do not fit in 40."""
    v = vendor
    secret = _prepaid(v)
    v.ok("POST", CREDIT, 201, json={"amount": 40})
    assert _plug_in(v)["decision"] == "allow"
    refused = _plug_in(v)
    assert (refused["decision"], refused["usage"], refused["reserved"], refused["balance"]) == ("deny", 0, 30, 10)
    told = v.told(secret, until="entitlement.usage_denied")
    [upsell] = [m["data"] for m in v.told(secret, until="upsell.suggested") if m["type"] == "upsell.suggested"]
    assert (upsell["status"], upsell["suggestion"]["action"], upsell["suggestion"]["top_up"]["count"]) == (
        "denied", "top_up", 1)
    assert [m["type"] for m in told if m["type"] == "entitlement.usage_denied"] == ["entitlement.usage_denied"]


def test_a_check_refused_while_a_silent_charger_holds_the_credit_offers_a_top_up(vendor: Vendor) -> None:
    """The same refusal through a consuming check (a charger that bills as it goes): the
    upsell makes room for the 30 kWh still held as well as for the 30 asked."""
    v = vendor
    secret = _prepaid(v)
    v.ok("POST", CREDIT, 201, json={"amount": 40})
    assert _plug_in(v)["decision"] == "allow"
    refused = v.ok("POST", "/v1/check", json={"customer": "driver", "feature": "kwh", "quantity": 30, "consume": True})
    assert (refused["decision"], refused["usage"], refused["balance"]) == ("deny", 0, 10)
    [upsell] = [m["data"] for m in v.told(secret, until="upsell.suggested") if m["type"] == "upsell.suggested"]
    assert (upsell["status"], upsell["suggestion"]["action"]) == ("denied", "top_up")
