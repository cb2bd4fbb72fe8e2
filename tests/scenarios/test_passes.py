"""Story 5, served: a gym's all-access and limited members (one pool entry a week, extras
paid), and transit riders spending prepaid rides; members see what they have left."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.scenarios.conftest import Vendor

pytestmark = pytest.mark.slow  # a real server per test

BERLIN = ZoneInfo("Europe/Berlin")


def _entry(v: Vendor, who: str, what: str) -> tuple[str, str]:
    answer = v.ok("POST", "/v1/check", json={"customer": who, "feature": what, "consume": True})
    return answer["decision"], answer["reason"]


def test_a_limited_member_gets_one_pool_entry_a_week_and_each_extra_is_flagged(vendor: Vendor) -> None:
    """Ann (all access) enters anything; Bob (limited) has no sauna, one pool entry in his week
    (Monday to Monday, Berlin time), and a second entry allowed as overdraft, which he sees."""
    v = vendor
    for key in ("pool", "sauna"):
        v.ok("POST", "/v1/features", 201, json={"key": key, "name": key.title(), "unit": "entry"})
    v.ok("POST", "/v1/plans", 201, json={"key": "all-access", "name": "All access", "entitlements": [
        {"feature": "pool", "kind": "boolean"}, {"feature": "sauna", "kind": "boolean"}]})
    v.ok("POST", "/v1/plans", 201, json={"key": "limited", "name": "Limited", "entitlements": [
        {"feature": "pool", "kind": "metered", "usage_period": "WEEK", "included": 1}]})
    monday = datetime.now(BERLIN).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    for who, tier in (("ann", "all-access"), ("bob", "limited")):
        v.ok("POST", f"/v1/plans/{tier}/publish")
        v.ok("POST", "/v1/customers", 201, json={"key": who, "name": who.title()})
        v.ok("POST", "/v1/subscriptions", 201, json={"customer": who, "plan": tier, "starts_at": monday.isoformat(),
                                                     "time_zone": "Europe/Berlin"})
    assert {_entry(v, "ann", what) for what in ("pool", "sauna", "pool")} == {("allow", "has_access")}
    assert _entry(v, "bob", "sauna") == ("deny", "not_entitled")
    assert _entry(v, "bob", "pool") == ("allow", "within_limit")
    assert _entry(v, "bob", "pool") == ("allow_overdraft", "soft_limit")
    [pool] = [e for e in v.ok("GET", "/v1/customers/bob/entitlements")["items"] if e["feature"] == "pool"]
    assert (pool["usage"], pool["balance"], pool["overage"], pool["in_overdraft"]) == (2, 0, 1, True)
    start, end = (datetime.fromisoformat(pool[k]).astimezone(BERLIN) for k in ("period_start", "period_end"))
    assert (start, end.date() - start.date(), end.hour) == (monday, timedelta(days=7), 0)


def test_a_rider_spends_prepaid_rides_sees_what_is_left_and_is_refused_at_zero(vendor: Vendor) -> None:
    """Ten rides bought: each is spent at the gate, the rider sees how many are left, the
    eleventh is refused (and listed) until more are bought."""
    v = vendor
    v.ok("POST", "/v1/features", 201, json={"key": "rides", "name": "Rides", "unit": "ride"})
    v.ok("POST", "/v1/customers", 201, json={"key": "cara", "name": "Cara"})
    v.ok("POST", "/v1/customers/cara/entitlements", 201, json={
        "feature": "rides", "kind": "metered", "usage_period": "NONE", "included": 0, "hard_limit": 0})
    rides = "/v1/customers/cara/entitlements/rides/grants"
    v.ok("POST", rides, 201, json={"amount": 10})
    assert {_entry(v, "cara", "rides") for _ in range(7)} == {("allow", "within_limit")}
    assert v.ok("GET", "/v1/customers/cara/entitlements/rides")["balance"] == 3
    assert [_entry(v, "cara", "rides") for _ in range(4)][-1] == ("deny", "hard_limit")
    assert len(v.ok("GET", "/v1/denials", params={"customer": "cara"})["items"]) == 1
    v.ok("POST", rides, 201, json={"amount": 5})
    assert _entry(v, "cara", "rides") == ("allow", "within_limit")
    assert v.ok("GET", "/v1/customers/cara/entitlements/rides")["balance"] == 4
