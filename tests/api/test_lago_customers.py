"""A Lago customer's current usage narrowed as the official Lago client asks for it (by billable
metric, by charge, by property values, over the whole subscription), against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BillableMetric, Customer, Plan, Subscription
from lago_python_client.models.billable_metric import BillableMetricFilter, BillableMetricFilters
from lago_python_client.models.charge import Charge, Charges
from lago_python_client.models.event import BatchEvent, Event
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_lago_client import lago

live = sdk.live  # the live server, as a fixture here too


def _setup(client: Client) -> Any:
    """Tokens split by model and calls, both charged by a Lago plan; Acme on it since 40 days."""
    tokens = client.billable_metrics.create(BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens",
        filters=BillableMetricFilters(__root__=[BillableMetricFilter(key="model", values=["gpt", "claude"])])))
    calls = client.billable_metrics.create(BillableMetric(name="Calls", code="calls", aggregation_type="count_agg"))
    assert tokens is not None and calls is not None
    plan = client.plans.create(Plan(name="API", code="api", interval="monthly", amount_cents=0, amount_currency="USD",
                                    charges=Charges(__root__=[
                                        Charge(billable_metric_id=tokens.lago_id, charge_model="standard",
                                               properties={"amount": "0.001"}),
                                        Charge(billable_metric_id=calls.lago_id, charge_model="standard",
                                               properties={"amount": "0.01"})])))
    client.customers.create(Customer(external_id="acme", name="Acme"))
    began = datetime.now(UTC) - timedelta(days=40)
    client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="api", external_id="sub-1",
                                             subscription_at=began.isoformat()))
    now = datetime.now(UTC)
    client.events.batch_create(BatchEvent(events=[
        Event(transaction_id=tx, external_subscription_id="sub-1", code=code, timestamp=int(at.timestamp()),
              properties=properties)
        for tx, code, at, properties in (
            ("t1", "tokens", now, {"tokens": "100", "model": "gpt"}),
            ("t2", "tokens", now, {"tokens": "20", "model": "claude"}),
            ("t3", "tokens", now - timedelta(days=35), {"tokens": "5", "model": "gpt"}),  # an earlier period
            ("c1", "calls", now, {}),
        )]))
    return plan


def _units(usage: Any) -> dict[str, float]:
    return {c.billable_metric.code: float(c.units) for c in usage.charges_usage}


def test_current_usage_of_one_billable_metric_lists_only_its_charge(live):
    client = lago(live)
    _setup(client)
    assert _units(client.customers.current_usage("acme", "sub-1", billable_metric_code="calls")) == {"calls": 1}


def test_current_usage_of_one_charge_lists_only_that_charge(live):
    client = lago(live)
    tokens_charge = _setup(client).charges.__root__[0]
    usage = client.customers.current_usage("acme", "sub-1", charge_id=tokens_charge.lago_id)
    assert [c.charge.lago_id for c in usage.charges_usage] == [tokens_charge.lago_id]
    assert client.customers.current_usage("acme", "sub-1", charge_id="chg_unknown").charges_usage == []


def test_current_usage_of_a_group_counts_only_its_events(live):
    """`group[model]=gpt`: the units of events whose `model` is gpt (a metric not split by
    `model` counts nothing under that filter)."""
    client = lago(live)
    _setup(client)
    assert _units(client.customers.current_usage("acme", "sub-1", group={"model": "gpt"})) == {
        "tokens": 100, "calls": 0}


def test_full_usage_counts_every_period_since_the_subscription_started(live):
    client = lago(live)
    _setup(client)
    assert _units(client.customers.current_usage("acme", "sub-1"))["tokens"] == 120
    assert _units(client.customers.current_usage("acme", "sub-1", full_usage=True))["tokens"] == 125


def test_a_group_filter_that_is_not_json_is_a_422_naming_it(live):
    """`filter_by_group` (the older form of `group`) is JSON text; anything else is refused."""
    _setup(lago(live))
    answer = httpx.get(f"{live.url}/lago/api/v1/customers/acme/current_usage", timeout=30,
                       params={"external_subscription_id": "sub-1", "filter_by_group": "{model"},
                       headers={"Authorization": f"Bearer {live.keys['read']}"})
    assert answer.status_code == 422
    assert list(answer.json()["error_details"]) == ["filter_by_group"]


def test_a_customer_without_external_id_is_a_422_saying_it_is_mandatory(live):
    """Lago's word for a missing field, as events already answer it."""
    with pytest.raises(LagoApiError) as refused:
        lago(live).customers.create(Customer.construct(name="Acme"))
    assert refused.value.status_code == 422
    assert refused.value.response["error_details"] == {"external_id": ["value_is_mandatory"]}


def test_a_customers_address_is_kept_and_a_later_upsert_changes_only_the_parts_it_sends(live):
    """The address parts come back as sent; an upsert without them keeps them, with one changes it."""
    client = lago(live)
    client.customers.create(Customer(external_id="acme", name="Acme", address_line1="1 Market St",
                                     city="San Francisco", zipcode="94105", state="CA", country="US",
                                     phone="+1 415 555 0100"))
    got = client.customers.find("acme")
    assert (got.address_line1, got.address_line2, got.city, got.zipcode, got.state, got.country, got.phone) == (
        "1 Market St", None, "San Francisco", "94105", "CA", "US", "+1 415 555 0100")
    client.customers.create(Customer(external_id="acme", name="Acme Corp"))
    assert client.customers.find("acme").city == "San Francisco"
    client.customers.create(Customer(external_id="acme", city="Oakland"))
    moved = client.customers.find("acme")
    assert (moved.city, moved.address_line1) == ("Oakland", "1 Market St")
