"""OpenMeter's entitlement history (`GET .../entitlements/{e}/history`), driven by the SDK.

The same live server as the other SDK tests, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter.models import (
    EntitlementBooleanCreateInputs,
    EntitlementGrantCreateInputV2,
    ExpirationPeriod,
    RecurringPeriodCreateInput,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import (
    customer,
    metered,
    plain_feature,
    tokens_feature,
)
from tests.api.test_openmeter_sdk import prompt

from allotment.types import utcnow

live, om = sdk.live, sdk.om
HOUR = timedelta(hours=1)


def history(om: openmeter.Client, size: str = "HOUR", feature: str = "tokens", **extra: Any) -> Any:
    return om.customer_entitlement_v2.get_customer_entitlement_history("acme", feature, window_size=size, **extra)


def daily(om: openmeter.Client, now: datetime, *, since: timedelta, anchor: timedelta, **extra: Any) -> Any:
    """100 a day, measured from `since` ago, in days that begin `anchor` ago."""
    customer(om)
    tokens_feature(om)
    return metered(
        om, issue_after_reset=100, measure_usage_from=now - since,
        usage_period=RecurringPeriodCreateInput(interval="DAY", anchor=now - anchor), **extra,
    )  # fmt: skip


def _minute_of(at: datetime) -> datetime:
    """Entitlements measure from whole minutes, as in OpenMeter."""
    return at.replace(second=0, microsecond=0)


def _hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def test_windowed_history_lists_each_hour_with_its_usage_and_the_balance_at_its_start(om):
    """By default from the start of the current period (here, the entitlement's) to now: every
    hour of it, those without usage too, as OpenMeter lists them."""
    now = utcnow()
    daily(om, now, since=5 * HOUR, anchor=6 * HOUR)
    om.events.ingest_event(prompt("acme", 10, at=now - 4 * HOUR))
    om.events.ingest_event(prompt("acme", 20, at=now - 2 * HOUR))
    got = history(om).windowed_history
    answered = utcnow()  # the server's "now" lies between the two
    crossed = [(_hour_of(answered), 0, 70)] if _hour_of(answered) != _hour_of(now) else []
    assert [(w.period.from_property, w.usage, w.balance_at_start) for w in got] == [
        (_minute_of(now - 5 * HOUR), 0, 100),
        (_hour_of(now - 4 * HOUR), 10, 100),
        (_hour_of(now - 3 * HOUR), 0, 90),
        (_hour_of(now - 2 * HOUR), 20, 90),
        (_hour_of(now - HOUR), 0, 70),
        (_hour_of(now), 0, 70),
        *crossed,
    ]
    assert [w.period.to for w in got[:-1]] == [w.period.from_property for w in got[1:]]


def test_windowed_history_without_usage_has_a_window_of_zero_usage_per_hour(om):
    """No usage in the range: one window per hour of it, each with usage 0 and the whole balance."""
    now = utcnow()
    daily(om, now, since=5 * HOUR, anchor=6 * HOUR)
    start, end = _hour_of(now - 3 * HOUR), _hour_of(now - HOUR)
    got = history(om, from_parameter=start, to=end).windowed_history
    assert [(w.period.from_property, w.period.to, w.usage, w.balance_at_start) for w in got] == [
        (start, start + HOUR, 0, 100),
        (start + HOUR, end, 0, 100),
    ]


def test_windowed_history_windows_are_cut_to_the_range(om):
    """A range that starts and ends inside hours: its first and last windows are the parts of
    those hours within it, so the windows cover the range exactly."""
    now = utcnow()
    daily(om, now, since=5 * HOUR, anchor=6 * HOUR)
    start, end = _hour_of(now - 3 * HOUR) + timedelta(minutes=20), _hour_of(now - HOUR) + timedelta(minutes=10)
    got = history(om, from_parameter=start, to=end).windowed_history
    assert [(w.period.from_property, w.period.to) for w in got] == [
        (start, _hour_of(now - 2 * HOUR)), (_hour_of(now - 2 * HOUR), _hour_of(now - HOUR)), (_hour_of(now - HOUR), end),
    ]  # fmt: skip


def test_windowed_history_counts_only_the_features_group(om):
    """A feature filtered to one model: the other model's usage is not in its history."""
    now = utcnow()
    customer(om)
    tokens_feature(om, meter_group_by_filters={"model": "gpt-4"})
    metered(om, issue_after_reset=100, measure_usage_from=now - 3 * HOUR)
    om.events.ingest_event(prompt("acme", 10, at=now - 2 * HOUR))
    om.events.ingest_event(prompt("acme", 99, "gpt-3", at=now - 2 * HOUR))
    got = history(om, "DAY", from_parameter=now - 3 * HOUR).windowed_history
    assert sum(w.usage for w in got) == 10


def test_burndown_has_a_segment_per_usage_period(om):
    """A reset between two segments: the second starts afresh with the included 100."""
    now = utcnow()
    daily(om, now, since=26 * HOUR, anchor=4 * HOUR, is_soft_limit=True)
    om.events.ingest_event(prompt("acme", 150, at=now - 20 * HOUR))
    om.events.ingest_event(prompt("acme", 10, at=now - HOUR))
    got = history(om, "DAY", from_parameter=now - 26 * HOUR)
    assert sum(w.usage for w in got.windowed_history) == 160
    assert [(s.period.from_property, s.period.to) for s in got.burndown_history] == [
        (now - 26 * HOUR, _minute_of(now - 4 * HOUR)), (_minute_of(now - 4 * HOUR), got.burndown_history[1].period.to),
    ]  # fmt: skip
    assert [(s.usage, s.overage, s.balance_at_start, s.balance_at_end) for s in got.burndown_history] == [
        (150, 50, 100, 0), (10, 0, 100, 90),
    ]  # fmt: skip


def test_burndown_starts_a_segment_where_a_grant_starts_and_says_what_it_burned(om):
    """A grant expiring before the period's included units: the 20 used after it started burn
    it first; the 10 used before are the included units'."""
    now = utcnow()
    daily(om, now, since=5 * HOUR, anchor=6 * HOUR)
    om.events.ingest_event(prompt("acme", 10, at=now - 4 * HOUR))
    top_up = om.customer_entitlement_v2.create_customer_entitlement_grant(
        "acme", "tokens", EntitlementGrantCreateInputV2(
            amount=50, effective_at=utcnow(), expiration=ExpirationPeriod(duration="HOUR", count=5)),
    )  # fmt: skip
    om.events.ingest_event(prompt("acme", 20, at=utcnow()))
    before, after = history(om).burndown_history
    assert (before.period.from_property, before.period.to) == (_minute_of(now - 5 * HOUR), top_up.effective_at)
    assert (before.usage, before.balance_at_start, before.balance_at_end) == (10, 100, 90)
    assert before.grant_balances_at_start == {} and before.grant_usages == []
    assert (after.usage, after.balance_at_start, after.balance_at_end) == (20, 140, 120)
    assert (after.grant_balances_at_start, after.grant_balances_at_end) == ({top_up.id: 50}, {top_up.id: 30})
    assert [(u.grant_id, u.usage) for u in after.grant_usages] == [(top_up.id, 20)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window_size": "WEEK"}, "windowSize"),
        ({"window_size": "HOUR", "window_time_zone": "Mars/Olympus"}, "windowTimeZone"),
        ({"window_size": "HOUR", "from_parameter": utcnow() + HOUR}, "from"),
        ({"window_size": "HOUR", "to": datetime(1, 1, 1, tzinfo=UTC)}, "to"),
    ],
)
def test_bad_history_request_is_a_400_naming_the_field(om, params, field):
    daily(om, utcnow(), since=HOUR, anchor=HOUR)
    with pytest.raises(HttpResponseError) as err:
        om.customer_entitlement_v2.get_customer_entitlement_history("acme", "tokens", **params)
    assert err.value.status_code == 400
    assert field in {e["field"] for e in err.value.response.json()["errors"]}


def test_history_of_a_boolean_entitlement_is_a_400_and_of_an_unknown_one_a_404(om):
    customer(om)
    plain_feature(om, "sso")
    om.customer_entitlements_v2.post("acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso"))
    with pytest.raises(HttpResponseError) as err:
        history(om, feature="sso")
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        history(om, feature="tokens")
