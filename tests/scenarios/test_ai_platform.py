"""Story 1, served: an AI API platform metering tokens, warning at 80 %, flagging overdraft past
1 M, denying at 1.5 M where the customer sees it, and selling 500 k top-ups for 90 days."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.scenarios.conftest import Vendor

pytestmark = pytest.mark.slow  # a real server per test

M = 1_000_000
_ids = itertools.count()


def _platform(v: Vendor) -> None:
    """Tokens by model and direction, calls counted; Starter (1 M, overdraft to 1.5 M) leads to
    Pro (10 M); acme on Starter sends prompts with two API keys."""
    v.ok("POST", "/v1/meters", 201, json={"key": "tokens", "event_type": "prompt", "aggregation": "SUM",
         "value_property": "$.tokens", "group_by": {"model": "$.model", "direction": "$.direction"}})
    v.ok("POST", "/v1/meters", 201, json={"key": "api-calls", "event_type": "prompt", "aggregation": "COUNT"})
    top_up = {"amount": 500_000, "price": "49.00", "currency": "USD", "expires_after_days": 90}
    v.ok("POST", "/v1/features", 201, json={"key": "tokens", "name": "Tokens", "unit": "token", "meter": "tokens",
                                            "metadata": {"top_up": top_up}})
    v.ok("POST", "/v1/features", 201, json={"key": "api-calls", "name": "API calls", "meter": "api-calls"})
    calls = {"feature": "api-calls", "kind": "metered", "usage_period": "MONTH"}
    v.ok("POST", "/v1/plans", 201, json={"key": "pro", "name": "Pro", "entitlements": [
        {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 10 * M}, calls]})
    v.ok("POST", "/v1/plans/pro/publish")
    v.ok("POST", "/v1/plans", 201, json={"key": "starter", "name": "Starter", "next_tier": "pro", "entitlements": [
        {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": M, "soft_limit": M,
         "hard_limit": 1_500_000}, calls]})
    v.ok("POST", "/v1/plans/starter/publish")
    v.ok("POST", "/v1/customers", 201, json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1", "acme-2"]})
    v.ok("POST", "/v1/subscriptions", 201, json={"customer": "acme", "plan": "starter"})


def _prompt(v: Vendor, subject: str, tokens: int, direction: str = "input") -> None:
    event = {"specversion": "1.0", "id": f"req-{next(_ids)}", "source": "gateway", "type": "prompt",
             "subject": subject, "data": {"tokens": tokens, "model": "large", "direction": direction}}
    assert v.ok("POST", "/v1/events", json=[event])["accepted"] == 1


def _check(v: Vendor, quantity: int, *, consume: bool = False) -> Any:
    return v.ok("POST", "/v1/check", json={"customer": "acme", "feature": "tokens", "quantity": quantity,
                                           "consume": consume})


def test_the_admin_is_warned_the_account_team_told_and_the_cap_denies_until_a_top_up(vendor: Vendor) -> None:
    """850 k reported warns the admin's endpoint (its rule: 80 %); passing 1 M tells the account
    team's; at 1.5 M requests are refused and listed with their times; a 500 k top-up for 90
    days serves acme again up to 2 M. Every webhook is signed and as documented."""
    v = vendor
    _platform(v)
    admin = v.endpoint(rules_only=True, headers={"x-audience": "admin"})
    team = v.endpoint(event_types=["entitlement.overdraft_started"], headers={"x-audience": "account-team"})
    everything = v.endpoint(headers={"x-audience": "vendor"})
    admin_id = next(e["id"] for e in v.ok("GET", "/v1/webhook-endpoints")["items"] if e["headers"] == {
        "x-audience": "admin"})
    v.ok("POST", "/v1/notification-rules", 201, json={
        "event_type": "entitlement.threshold_reached", "features": ["tokens"], "endpoint_ids": [admin_id],
        "thresholds": [{"type": "percent", "value": 80}]})
    _prompt(v, "acme-1", 600_000)
    _prompt(v, "acme-2", 250_000, "output")
    assert (_check(v, 150_000, consume=True)["decision"], _check(v, 1, consume=True)["decision"]) == (
        "allow", "allow_overdraft")
    assert _check(v, 499_999, consume=True)["usage"] == 1_500_000
    refused = [_check(v, 2000) for _ in range(3)]
    assert {(r["decision"], r["reason"], r["usage"]) for r in refused} == {("deny", "hard_limit", 1_500_000)}
    denials = v.ok("GET", "/v1/denials", params={"customer": "acme", "feature": "tokens"})["items"]
    assert [(d["quantity"], d["reason"]) for d in denials] == [(2000, "hard_limit")] * 3
    expires = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
    v.ok("POST", "/v1/customers/acme/entitlements/tokens/grants", 201,
         json={"amount": 500_000, "expires_at": expires.isoformat()})
    served = _check(v, 500_000)
    assert (served["decision"], served["hard_limit"]) == ("allow_overdraft", 2 * M)
    assert _check(v, 500_001)["decision"] == "deny"

    warned = v.told(admin, until="entitlement.threshold_reached", header=("x-audience", "admin"))
    assert [(m["type"], m["data"]["threshold"]["label"], m["data"]["usage"]) for m in warned] == [
        ("entitlement.threshold_reached", "80%", 850_000)]
    overdraft = v.told(team, until="entitlement.overdraft_started", header=("x-audience", "account-team"))
    assert [(m["type"], m["data"]["usage"], m["data"]["soft_limit"]) for m in overdraft] == [
        ("entitlement.overdraft_started", 1_000_001, M)]
    told = v.told(everything, until=("entitlement.usage_denied", "upsell.suggested"), header=("x-audience", "vendor"))
    usage_types = [m["type"] for m in told if m["type"] not in ("entitlement.changed", "upsell.suggested")]
    assert usage_types == ["entitlement.threshold_reached", "entitlement.overdraft_started",
                           "entitlement.hard_limit_reached", "entitlement.usage_denied"]
    [upsell] = [m["data"] for m in told if m["type"] == "upsell.suggested"]
    assert (upsell["customer"], upsell["feature"], upsell["current_plan"]) == ("acme", "tokens", "starter")
    times = [m["data"]["at"] for m in told] + [m["data"]["period_start"] for m in told if "period_start" in m["data"]]
    assert all(t.endswith("Z") for t in times), times  # every time in UTC, written alike
