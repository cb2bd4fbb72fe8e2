"""Story 4, served: a prepaid mobile bundle with an add-on that burns first, data that rolls
over up to 2 GB, late network records landing in their own period, and data denied at zero."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.scenarios.conftest import Vendor

pytestmark = pytest.mark.slow  # a real server per test

GB = 1000  # data is metered in MB
_ids = itertools.count()


def _operator(v: Vendor, turn: datetime) -> str:
    """A monthly 10 GB bundle rolling over up to 2 GB; the subscriber joined 40 days ago and
    its month turned at `turn`. Returns the secret of the operator's endpoint."""
    secret = v.endpoint()
    v.ok("POST", "/v1/meters", 201, json={"key": "data", "event_type": "data", "aggregation": "SUM",
                                          "value_property": "$.mb"})
    v.ok("POST", "/v1/features", 201, json={"key": "data", "name": "Mobile data", "unit": "MB", "meter": "data"})
    v.ok("POST", "/v1/plans", 201, json={"key": "monthly", "name": "Monthly", "entitlements": [
        {"feature": "data", "kind": "metered", "usage_period": "MONTH", "included": 10 * GB, "hard_limit": 10 * GB,
         "included_rollover": 2 * GB}]})
    v.ok("POST", "/v1/plans/monthly/publish")
    v.ok("POST", "/v1/customers", 201, json={"key": "sub-1", "name": "Subscriber", "subject_keys": ["sim-1"]})
    v.ok("POST", "/v1/subscriptions", 201, json={"customer": "sub-1", "plan": "monthly",
         "starts_at": (turn - timedelta(days=40)).isoformat(), "billing_anchor": turn.isoformat()})
    return secret


def _records(v: Vendor, *usage: tuple[float, datetime]) -> None:
    """Data records as the network sends them, stamped when the data was used."""
    events = [{"specversion": "1.0", "id": f"cdr-{next(_ids)}", "source": "network", "type": "data",
               "subject": "sim-1", "time": at.isoformat(), "data": {"mb": mb}} for mb, at in usage]
    assert v.ok("POST", "/v1/events", json=events)["accepted"] == len(events)


def _data(v: Vendor) -> Any:
    return v.ok("GET", "/v1/customers/sub-1/entitlements/data")


def test_an_add_on_burns_first_late_records_move_the_rollover_and_data_stops_at_zero(vendor: Vendor) -> None:
    """Last month 11 of its 12 GB (10 and 2 rolled in) were used, so 1 GB rolled over; a 1 GB
    add-on expiring in a week pays for this month's first data; a record of last month arriving
    late leaves 600 MB to roll over; once everything is spent data is refused."""
    v = vendor
    now = datetime.now(UTC).replace(microsecond=0)
    turn = now - timedelta(hours=2)
    secret = _operator(v, turn)
    _records(v, (11 * GB, turn - timedelta(days=10)))
    assert (_data(v)["usage"], _data(v)["rolled_over"], _data(v)["hard_limit"]) == (0, 1000, 11 * GB)
    add_on = v.ok("POST", "/v1/customers/sub-1/entitlements/data/grants", 201,
                  json={"amount": GB, "expires_at": (now + timedelta(days=7)).isoformat()})
    _records(v, (600, datetime.now(UTC)))
    seen = _data(v)
    assert [(g["id"], g["balance"]) for g in seen["grants"]] == [(add_on["id"], 400)]
    _records(v, (400, turn - timedelta(minutes=30)))  # used before the turn, reported after it
    seen = _data(v)
    assert (seen["usage"], seen["rolled_over"], seen["hard_limit"], seen["balance"]) == (600, 600, 11_600, 11_000)
    _records(v, (11_000, datetime.now(UTC)))
    denied = v.ok("POST", "/v1/check", json={"customer": "sub-1", "feature": "data", "quantity": 1})
    assert (denied["decision"], denied["reason"], denied["balance"]) == ("deny", "hard_limit", 0)
    told = v.told(secret, until=("entitlement.period_reset", "entitlement.usage_denied"))
    [reset] = [m["data"] for m in told if m["type"] == "entitlement.period_reset"]
    assert (reset["previous_usage"], reset["usage"], datetime.fromisoformat(reset["period_start"])) == (11 * GB, 0, turn)
    assert [m["type"] for m in told if m["type"].startswith("entitlement.") and m["type"] not in (
        "entitlement.changed", "entitlement.period_reset", "entitlement.threshold_reached")] == [
        "entitlement.hard_limit_reached", "entitlement.usage_denied"]
