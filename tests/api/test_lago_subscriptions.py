"""Lago subscriptions and their billing periods, driven by the official Lago client against a
real server: `billing_time` says whether periods follow the calendar or the subscription's
start, and current usage answers the period's bounds as Lago does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Customer, Subscription
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_lago_client import lago, setup_plan

live = sdk.live  # the live server, as a fixture here too


def _subscribe(client, customer: str, external_id: str, **fields):  # type: ignore[no-untyped-def]
    client.customers.create(Customer(external_id=customer, name=customer))
    return client.subscriptions.create(Subscription(external_customer_id=customer, plan_code="starter",
                                                    external_id=external_id, **fields))


def _month_after(day: datetime) -> datetime:
    return day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1)


def test_a_subscription_bills_on_the_calendar_unless_told_otherwise(live):
    """As in Lago: `billing_time` is `calendar` by default, and answered as it was asked."""
    client = lago(live)
    setup_plan(live, client)
    assert client.subscriptions.find("sub-1").billing_time == "calendar"
    assert _subscribe(client, "beta", "sub-b", billing_time="anniversary").billing_time == "anniversary"
    assert _subscribe(client, "gamma", "sub-g", billing_time="calendar").billing_time == "calendar"
    assert [s.billing_time for s in client.subscriptions.find_all()["subscriptions"]] == [
        "calendar", "anniversary", "calendar"]


def test_an_unknown_billing_time_is_a_422_naming_it(live):
    client = lago(live)
    setup_plan(live, client)
    with pytest.raises(LagoApiError) as refused:
        _subscribe(client, "beta", "sub-b", billing_time="fortnightly")
    assert refused.value.status_code == 422
    assert refused.value.response["error_details"] == {"billing_time": ["value_is_invalid"]}


def test_current_usage_of_a_calendar_subscription_is_of_the_calendar_month(live):
    """Lago's bounds: from the 1st at midnight to the month's last second, issued the next day."""
    client = lago(live)
    setup_plan(live, client)
    now = datetime.now(UTC)
    _subscribe(client, "beta", "sub-b", subscription_at=(now - timedelta(days=40)).isoformat())
    usage = client.customers.current_usage("beta", "sub-b")
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = _month_after(first)
    assert (usage.from_datetime, usage.to_datetime, usage.issuing_date) == (
        f"{first:%Y-%m-%dT%H:%M:%SZ}", f"{following - timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}",
        f"{following:%Y-%m-%d}")


def test_current_usage_of_an_anniversary_subscription_runs_from_the_day_it_started(live):
    """Anniversary periods start at midnight of the day of the month the subscription began."""
    client = lago(live)
    setup_plan(live, client)
    now = datetime.now(UTC)
    began = datetime(now.year - 1, 3, 10, 15, 30, tzinfo=UTC)
    _subscribe(client, "beta", "sub-b", billing_time="anniversary", subscription_at=began.isoformat())
    usage = client.customers.current_usage("beta", "sub-b")
    tenth = now.replace(day=10, hour=0, minute=0, second=0, microsecond=0)
    start = tenth if now >= tenth else (tenth.replace(day=1) - timedelta(days=1)).replace(day=10)
    end = _month_after(start)
    assert (usage.from_datetime, usage.to_datetime) == (
        f"{start:%Y-%m-%dT%H:%M:%SZ}", f"{end - timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}")


def test_current_usage_of_a_subscription_started_this_period_runs_from_its_start(live):
    """As in Lago: the first period of a subscription begins when the subscription does."""
    client = lago(live)
    setup_plan(live, client)
    started = client.subscriptions.find("sub-1").started_at
    assert client.customers.current_usage("acme", "sub-1").from_datetime in (
        started, f"{datetime.now(UTC):%Y-%m-01T00:00:00Z}")  # it began this month, or a month boundary since
