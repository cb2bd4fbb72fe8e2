"""Lago plans through the official Lago client: each one a published native plan whose charges
are metered entitlements, its pricing kept and answered back as sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BillableMetric, Customer, Plan, Subscription
from lago_python_client.models.charge import Charge, Charges
from lago_python_client.models.event import BatchEvent, Event
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_lago_client import _at_once, lago, native
from tests.api.test_openmeter_sdk import Live

live = sdk.live  # the live server, as a fixture here too


def metrics(client: Client) -> dict[str, str]:
    """Two billable metrics, by code -> lago_id."""
    tokens = client.billable_metrics.create(BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens"))
    calls = client.billable_metrics.create(BillableMetric(name="Calls", code="calls", aggregation_type="count_agg"))
    assert tokens is not None and calls is not None
    return {"tokens": tokens.lago_id, "calls": calls.lago_id}


def pro(ids: dict[str, str], *, code: str = "pro", interval: str = "monthly") -> Plan:
    return Plan(
        name="Pro", code=code, interval=interval, description="For teams", amount_cents=4900,
        amount_currency="EUR", trial_period=14.0, pay_in_advance=True, invoice_display_name="Pro plan",
        charges=Charges(__root__=[
            Charge(billable_metric_id=ids["tokens"], charge_model="standard", invoice_display_name="Tokens",
                   properties={"amount": "0.002"}),
            Charge(billable_metric_id=ids["calls"], charge_model="package", pay_in_advance=False,
                   properties={"amount": "5", "free_units": 100, "package_size": 1000}),
        ]),
    )


def created(client: Client, plan: Plan) -> Any:
    answer = client.plans.create(plan)
    assert answer is not None
    return answer


def lago_error(call: Any) -> Any:
    with pytest.raises(LagoApiError) as refused:
        call()
    return refused.value


def test_a_plan_created_through_lago_answers_its_pricing_as_sent(live):
    """Pricing has no native home yet: it is kept and answered back, with Lago's ids."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    assert (plan.code, plan.name, plan.interval, plan.description) == ("pro", "Pro", "monthly", "For teams")
    assert (plan.amount_cents, plan.amount_currency, plan.trial_period, plan.pay_in_advance) == (4900, "EUR", 14, True)
    assert plan.invoice_display_name == "Pro plan" and plan.lago_id and plan.created_at
    tokens, calls = plan.charges.__root__
    assert (tokens.billable_metric_code, tokens.charge_model, tokens.properties) == ("tokens", "standard",
                                                                                      {"amount": "0.002"})
    assert (calls.billable_metric_code, calls.charge_model, calls.pay_in_advance) == ("calls", "package", False)
    assert calls.properties == {"amount": "5", "free_units": 100, "package_size": 1000}
    assert tokens.lago_id and calls.lago_id and tokens.lago_id != calls.lago_id


def test_a_plan_found_by_code_is_the_one_created(live):
    """find answers what create answered."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    assert client.plans.find("pro") == plan


def test_each_charge_is_a_metered_entitlement_of_the_published_native_plan(live):
    """Usage period = the plan's interval, nothing included and no hard limit: Lago bills usage,
    it does not cap it."""
    client = lago(live)
    created(client, pro(metrics(client)))
    plan = native(live, "GET", "/v1/plans/pro")
    assert (plan["status"], plan["billing_interval"], plan["description"]) == ("published", "month", "For teams")
    shapes = {(e["feature"], e["kind"], e["usage_period"], e["hard_limit"]) for e in plan["entitlements"]}
    assert shapes == {("tokens", "metered", "MONTH", None), ("calls", "metered", "MONTH", None)}
    features = {f["key"]: f["meter"] for f in native(live, "GET", "/v1/features")["items"]}
    assert features == {"tokens": "tokens", "calls": "calls"}


def test_a_charge_reuses_the_feature_that_already_measures_its_metric(live):
    """A feature made natively on the metric's meter is the one the plan entitles."""
    client = lago(live)
    ids = metrics(client)
    native(live, "POST", "/v1/features", {"key": "llm-tokens", "meter": "tokens"})
    created(client, pro(ids))
    plan = native(live, "GET", "/v1/plans/pro")
    assert sorted(e["feature"] for e in plan["entitlements"]) == ["calls", "llm-tokens"]


def test_a_weekly_plan_meters_its_charges_by_the_week(live):
    """weekly -> usage period WEEK, and weekly billing periods."""
    client = lago(live)
    created(client, pro(metrics(client), interval="weekly"))
    plan = native(live, "GET", "/v1/plans/pro")
    assert plan["billing_interval"] == "week"
    assert {e["usage_period"] for e in plan["entitlements"]} == {"WEEK"}


def test_yearly_interval_meters_by_the_year(live):
    """yearly -> usage period YEAR."""
    client = lago(live)
    created(client, pro(metrics(client), interval="yearly"))
    plan = native(live, "GET", "/v1/plans/pro")
    assert plan["billing_interval"] == "year" and {e["usage_period"] for e in plan["entitlements"]} == {"YEAR"}


@pytest.mark.parametrize("interval", ["quarterly", "semiannual", "daily"])
def test_an_interval_we_cannot_hold_is_a_422_naming_interval(live, interval):
    """There is no quarter or half-year usage period: refused, nothing created."""
    client = lago(live)
    refused = lago_error(lambda: client.plans.create(pro(metrics(client), interval=interval)))
    assert refused.status_code == 422 and refused.response["code"] == "validation_errors"
    assert list(refused.response["error_details"]) == ["interval"]
    assert native(live, "GET", "/v1/plans")["items"] == []


def test_missing_mandatory_fields_are_a_422_naming_each(live):
    """name, code, interval, amount_cents and amount_currency are mandatory, as in Lago."""
    client = lago(live)
    refused = lago_error(lambda: client.plans.create(Plan(description="nothing else")))
    assert refused.status_code == 422
    assert set(refused.response["error_details"]) == {"name", "code", "interval", "amount_cents", "amount_currency"}


def test_a_code_we_cannot_key_a_plan_by_is_a_422_naming_code(live):
    """It becomes the native plan key (lower-case letters, digits, `_`, `-`)."""
    client = lago(live)
    refused = lago_error(lambda: client.plans.create(pro(metrics(client), code="Pro Plan")))
    assert refused.status_code == 422 and list(refused.response["error_details"]) == ["code"]


def test_a_code_taken_is_a_422_value_already_exist(live):
    """As Lago: a second plan with the same code is refused on `code`."""
    client = lago(live)
    ids = metrics(client)
    created(client, pro(ids))
    refused = lago_error(lambda: client.plans.create(pro(ids)))
    assert refused.status_code == 422 and refused.response["error_details"] == {"code": ["value_already_exist"]}


def test_a_charge_on_an_unknown_billable_metric_is_a_404(live):
    """As Lago: billable_metric_not_found, and no plan is created."""
    client = lago(live)
    plan = pro(metrics(client))
    plan.charges.__root__[1].billable_metric_id = "bm_unknown"
    refused = lago_error(lambda: client.plans.create(plan))
    assert refused.status_code == 404 and refused.response["code"] == "billable_metric_not_found"
    assert lago_error(lambda: client.plans.find("pro")).status_code == 404


def test_a_charge_without_a_metric_or_model_is_a_422_naming_it(live):
    """The field is named under its charge's index."""
    client = lago(live)
    plan = pro(metrics(client))
    plan.charges.__root__[0].billable_metric_id = None
    plan.charges.__root__[1].charge_model = "by_the_moon"
    refused = lago_error(lambda: client.plans.create(plan))
    assert refused.status_code == 422
    assert set(refused.response["error_details"]) == {"charges.0.billable_metric_id", "charges.1.charge_model"}


def test_an_unknown_plan_is_a_404_plan_not_found(live):
    """find, update and destroy all name it as Lago does."""
    client = lago(live)
    for call in (lambda: client.plans.find("nope"), lambda: client.plans.update(Plan(name="x"), "nope"),
                 lambda: client.plans.destroy("nope")):
        refused = lago_error(call)
        assert refused.status_code == 404 and refused.response["code"] == "plan_not_found"


def test_plans_are_listed_page_by_page(live):
    """find_all pages by Lago's page numbers, in code order, with the meta Lago answers."""
    client = lago(live)
    ids = metrics(client)
    for code in ("c-plan", "a-plan", "b-plan"):
        created(client, pro(ids, code=code))
    first = client.plans.find_all({"per_page": 2, "page": 1})
    second = client.plans.find_all({"per_page": 2, "page": 2})
    assert [p.code for p in first["plans"]] == ["a-plan", "b-plan"] and [p.code for p in second["plans"]] == ["c-plan"]
    assert first["meta"]["total_count"] == 3 and first["meta"]["next_page"] == 2 and second["meta"]["next_page"] is None


def test_an_update_publishes_a_new_version_keeping_lago_ids(live):
    """Name and one charge change; the plan and the charge sent with its id keep their lago_id,
    and the previous native version is archived."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    tokens, calls = plan.charges.__root__
    change = Plan(name="Pro 2", charges=Charges(__root__=[
        Charge(id=tokens.lago_id, properties={"amount": "0.001"}), Charge(id=calls.lago_id)]))
    updated = client.plans.update(change, "pro")
    assert (updated.name, updated.lago_id, updated.amount_cents, updated.created_at) == ("Pro 2", plan.lago_id,
                                                                                          4900, plan.created_at)
    new_tokens, new_calls = updated.charges.__root__
    assert (new_tokens.lago_id, new_tokens.properties, new_tokens.charge_model) == (tokens.lago_id,
                                                                                    {"amount": "0.001"}, "standard")
    assert new_calls == calls and client.plans.find("pro") == updated
    versions = native(live, "GET", "/v1/plans?key=pro")["items"]
    assert [(v["version"], v["status"], v["name"]) for v in versions] == [(1, "archived", "Pro"),
                                                                          (2, "published", "Pro 2")]


def test_charges_left_out_of_an_update_are_removed(live):
    """As Lago: the charges sent replace the plan's; the entitlement of one removed goes too."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    tokens = plan.charges.__root__[0]
    updated = client.plans.update(Plan(charges=Charges(__root__=[Charge(id=tokens.lago_id)])), "pro")
    assert [c.billable_metric_code for c in updated.charges.__root__] == ["tokens"]
    assert [e["feature"] for e in native(live, "GET", "/v1/plans/pro")["entitlements"]] == ["tokens"]


def test_an_update_keeps_what_the_plan_entitles_beyond_its_charges(live):
    """A plan made natively, renamed through Lago: its boolean feature and the included units
    and hard limit of its metered one are still what new subscribers get."""
    client = lago(live)
    metrics(client)
    native(live, "POST", "/v1/features", {"key": "tokens", "meter": "tokens"})
    native(live, "POST", "/v1/features", {"key": "sso"})
    native(live, "POST", "/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
        {"feature": "tokens", "kind": "metered", "included": 1000, "hard_limit": 1500},
        {"feature": "sso", "kind": "boolean"}]})
    native(live, "POST", "/v1/plans/starter/publish")
    client.plans.update(Plan(name="Starter 2"), "starter")
    plan = native(live, "GET", "/v1/plans/starter")
    shapes = {(e["feature"], e["kind"], e["included"], e["hard_limit"]) for e in plan["entitlements"]}
    assert (plan["name"], shapes) == ("Starter 2", {("tokens", "metered", 1000, 1500), ("sso", "boolean", None, None)})


def test_an_interval_change_moves_the_charges_usage_period(live):
    """monthly -> weekly: the charges' entitlements are counted by the week."""
    client = lago(live)
    created(client, pro(metrics(client)))
    client.plans.update(Plan(interval="weekly"), "pro")
    plan = native(live, "GET", "/v1/plans/pro")
    assert {e["usage_period"] for e in plan["entitlements"]} == {"WEEK"} and len(plan["entitlements"]) == 2


def test_an_update_to_an_interval_we_cannot_hold_is_a_422_and_changes_nothing(live):
    """The plan stays as it was: no new version."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    refused = lago_error(lambda: client.plans.update(Plan(interval="quarterly"), "pro"))
    assert refused.status_code == 422 and list(refused.response["error_details"]) == ["interval"]
    assert client.plans.find("pro") == plan


def subscribe(client: Client) -> None:
    client.customers.create(Customer(external_id="acme", name="Acme", currency="EUR"))
    began = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="pro", external_id="sub-1",
                                             subscription_at=began))


def test_a_customer_subscribed_by_plan_code_has_usage_for_both_charges(live):
    """Created through Lago, subscribed with its code: current usage lists each charge's units."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    subscribe(client)
    now = int(datetime.now(UTC).timestamp())
    client.events.batch_create(BatchEvent(events=[
        Event(transaction_id=f"t{i}", external_subscription_id="sub-1", code=code, timestamp=now,
              properties={"tokens": tokens})
        for i, (code, tokens) in enumerate([("tokens", 120), ("tokens", 30), ("calls", 0), ("calls", 0)])
    ]))
    usage = client.customers.current_usage("acme", "sub-1")
    units = {c.billable_metric.code: float(c.units) for c in usage.charges_usage}
    assert units == {"tokens": 150, "calls": 2}
    charges = {c.lago_id: c.charge_model for c in plan.charges.__root__}
    assert {c.charge.lago_id: c.charge.charge_model for c in usage.charges_usage} == charges


def test_destroying_a_plan_terminates_its_subscriptions(live):
    """Lago deletes the plan and terminates its subscriptions: the native versions are
    archived and the subscriptions end now."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    subscribe(client)
    gone = client.plans.destroy("pro")
    assert gone.lago_id == plan.lago_id and gone.code == "pro"
    assert client.subscriptions.find("sub-1").status == "terminated"
    refused = lago_error(lambda: client.plans.find("pro"))
    assert refused.status_code == 404 and refused.response["code"] == "plan_not_found"
    assert {v["status"] for v in native(live, "GET", "/v1/plans?key=pro")["items"]} == {"archived"}
    assert client.plans.find_all()["plans"] == []


def test_a_destroyed_plans_code_can_be_used_again(live):
    """A new plan of that code is a new Lago plan (a new lago_id)."""
    client = lago(live)
    ids = metrics(client)
    first = created(client, pro(ids))
    client.plans.destroy("pro")
    again = created(client, pro(ids))
    assert again.lago_id != first.lago_id and client.plans.find("pro") == again


def test_a_plan_made_natively_is_answered_with_a_charge_per_metered_feature(live):
    """No Lago document: no price, and its metered features as standard charges."""
    client = lago(live)
    metrics(client)
    native(live, "POST", "/v1/features", {"key": "tokens", "meter": "tokens"})
    native(live, "POST", "/v1/plans", {"key": "starter", "name": "Starter", "currency": "USD", "entitlements": [
        {"feature": "tokens", "kind": "metered", "included": 1000, "hard_limit": 1500}]})
    native(live, "POST", "/v1/plans/starter/publish")
    plan = client.plans.find("starter")
    assert (plan.interval, plan.amount_cents, plan.amount_currency) == ("monthly", 0, "USD")
    assert [(c.billable_metric_code, c.charge_model) for c in plan.charges.__root__] == [("tokens", "standard")]


BASE = {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR"}


def charged(**fields: Any) -> dict[str, Any]:
    """A plan body whose one charge has these fields besides a metric and a model."""
    return {"plan": BASE | {"charges": [{"billable_metric_id": "tokens", "charge_model": "standard", **fields}]}}


@pytest.mark.parametrize(("body", "field"), [
    ({"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": "lots", "amount_currency": "EUR"}},
     "amount_cents"),
    ({"plan": BASE | {"trial_period": "two weeks"}}, "trial_period"),
    ({"plan": BASE | {"pay_in_advance": {"yes": True}}}, "pay_in_advance"),
    ({"plan": BASE | {"invoice_display_name": {"en": "Pro"}}}, "invoice_display_name"),
    ({"plan": BASE | {"metadata": "team plan"}}, "metadata"),
    (charged(properties="0.002"), "charges.0.properties"),
    (charged(min_amount_cents="none"), "charges.0.min_amount_cents"),
    (charged(filters={"region": "eu"}), "charges.0.filters"),
    (charged(filters=[{"values": {"region": "eu"}}]), "charges.0.filters.0.values.region"),
    ({"plan": BASE | {"usage_thresholds": [{"amount_cents": 100, "recurring": "sometimes"}]}},
     "usage_thresholds.0.recurring"),
    ({"plan": BASE | {"minimum_commitment": {"amount_cents": 100, "invoice_display_name": ["Minimum"]}}},
     "minimum_commitment.invoice_display_name"),
    ({"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
               "charges": [7]}}, "charges.0"),
    ({"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
               "charges": {"billable_metric_id": "x"}}}, "charges"),
    ({"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
               "usage_thresholds": [{"threshold_display_name": "no amount"}]}}, "usage_thresholds.0.amount_cents"),
    ({"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
               "tax_codes": ["vat"]}}, "tax_codes"),
    ({"plan": "p"}, "plan"),
])
def test_a_malformed_plan_is_a_422_naming_the_field(live, body, field):
    """Sent without the client, as any HTTP caller could: never a 500, and never kept in a shape
    the client cannot read back (one such plan would break every list of plans)."""
    answer = raw(live, "POST", "/plans", body)
    assert answer.status_code == 422 and field in answer.json()["error_details"], answer.text
    assert lago(live).plans.find_all()["plans"] == []


def raw(live: Live, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, live.url + "/lago/api/v1" + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {live.keys['admin']}"})


def test_a_mistyped_field_in_an_update_is_a_422_and_changes_nothing(live):
    """The plan stays as it was, readable by the client."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    answer = raw(live, "PUT", "/plans/pro", {"plan": {"trial_period": "two weeks"}})
    assert answer.status_code == 422 and list(answer.json()["error_details"]) == ["trial_period"]
    assert client.plans.find("pro") == plan


def test_an_update_cannot_replace_the_ids_and_times_lago_gives(live):
    """lago_id, created_at and a charge's metric code are ours to answer: sent back (as a caller
    echoing a plan it read would), they change nothing."""
    client = lago(live)
    plan = created(client, pro(metrics(client)))
    tokens = plan.charges.__root__[0]
    answer = raw(live, "PUT", "/plans/pro", {"plan": {
        "name": "Pro 2", "lago_id": "pln_mine", "created_at": "2000-01-01T00:00:00Z",
        "charges": [{"id": tokens.lago_id, "lago_id": "chg_mine", "billable_metric_code": "calls"}]}})
    assert answer.status_code == 200, answer.text
    updated = client.plans.find("pro")
    assert (updated.name, updated.lago_id, updated.created_at) == ("Pro 2", plan.lago_id, plan.created_at)
    assert [(c.lago_id, c.billable_metric_code) for c in updated.charges.__root__] == [(tokens.lago_id, "tokens")]


def test_a_new_charge_gets_a_lago_id_of_ours(live):
    """A lago_id sent with a new charge is not taken: two plans could otherwise share one."""
    client = lago(live)
    metrics(client)
    answer = raw(live, "POST", "/plans", charged(lago_id="chg_mine", created_at="2000-01-01T00:00:00Z"))
    assert answer.status_code == 200, answer.text
    charge = client.plans.find("p").charges.__root__[0]
    assert charge.lago_id != "chg_mine" and charge.created_at != "2000-01-01T00:00:00Z"


def test_cascade_updates_is_not_kept_with_the_plan(live):
    """An instruction of the request: subscriptions follow a new version when migrated."""
    client = lago(live)
    created(client, pro(metrics(client)))
    answer = raw(live, "PUT", "/plans/pro", {"plan": {"name": "Pro 2", "cascade_updates": True}})
    assert answer.status_code == 200 and "cascade_updates" not in answer.json()["plan"], answer.text


def test_plans_created_at_once_on_new_metrics_share_their_features(live):
    """Each charge's metric gets one feature, whichever request made it: none is refused."""
    metrics(lago(live))
    bodies = [{"plan": BASE | {"code": f"plan-{i}", "charges": [
        {"billable_metric_id": "tokens", "charge_model": "standard"},
        {"billable_metric_id": "calls", "charge_model": "standard"}]}} for i in range(6)]
    answers = _at_once(live, "/plans", bodies)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    features = {f["key"]: f["meter"] for f in native(live, "GET", "/v1/features")["items"]}
    assert features == {"tokens": "tokens", "calls": "calls"}


def test_creates_of_one_code_at_once_leave_one_plan(live):
    """One is created; the others are told the code is taken, as a create sent after it would be."""
    metrics(lago(live))
    answers = _at_once(live, "/plans", [charged()] * 6)
    assert sorted(a.status_code for a in answers) == [200] + [422] * 5, [a.text for a in answers]
    assert all(a.json()["error_details"] == {"code": ["value_already_exist"]}
               for a in answers if a.status_code == 422), [a.text for a in answers]
    assert [p.code for p in lago(live).plans.find_all()["plans"]] == ["p"]


def test_destroying_a_plan_ends_its_native_subscriptions_too(live):
    """A subscription started natively on the plan is canceled now."""
    client = lago(live)
    created(client, pro(metrics(client)))
    native(live, "POST", "/v1/customers", {"key": "globex", "name": "Globex"})
    sub = native(live, "POST", "/v1/subscriptions", {"customer": "globex", "plan": "pro"})
    client.plans.destroy("pro")
    assert native(live, "GET", f"/v1/subscriptions/{sub['id']}")["status"] == "canceled"


def test_a_metric_whose_code_another_feature_has_is_a_422_naming_the_charge(live):
    """The feature made for a metric takes its code: when a feature counting other usage has
    it, the charge is refused and nothing is created."""
    client = lago(live)
    ids = metrics(client)
    native(live, "POST", "/v1/features", {"key": "calls"})  # no meter
    refused = lago_error(lambda: client.plans.create(pro(ids)))
    assert refused.status_code == 422 and list(refused.response["error_details"]) == ["charges.1.billable_metric_id"]
    assert native(live, "GET", "/v1/plans")["items"] == []
