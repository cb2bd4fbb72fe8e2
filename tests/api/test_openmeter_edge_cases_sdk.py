"""OpenMeter behaviours found by using the official SDK as a client would, on every parameter.

The same live server as the other SDK tests (uvicorn in a thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from openmeter.models import (
    Address,
    CustomerCreate,
    CustomerReplaceUpdate,
    CustomerUsageAttribution,
    EntitlementGrantCreateInputV2,
    EntitlementMeteredV2CreateInputs,
    EntitlementStaticCreateInputs,
    ExpirationPeriod,
    FeatureCreateInputs,
    MeterCreate,
    RecurringPeriodCreateInput,
    SubjectUpsert,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import customer, grant, metered, tokens_feature
from tests.api.test_openmeter_sdk import T0, Live, prompt, tokens_meter

live, om = sdk.live, sdk.om

HOUR = timedelta(hours=1)


# --- events ------------------------------------------------------------------------------------


def test_events_list_with_to_before_from_is_a_400_naming_to(om):
    """An empty range is a mistake the client should hear about, as OpenMeter answers it."""
    tokens_meter(om)
    om.events.ingest_event(prompt(at=T0))
    with pytest.raises(HttpResponseError) as err:
        om.events.list(from_parameter=T0 + HOUR, to=T0)
    assert (err.value.status_code, err.value.model.status) == (400, 400)
    assert err.value.model.detail.startswith("to: ")


def test_events_list_with_ingested_at_to_before_from_is_a_400_naming_it(om):
    """The same for the ingestion-time bounds."""
    now = datetime.now(UTC)
    with pytest.raises(HttpResponseError) as err:
        om.events.list(ingested_at_from=now, ingested_at_to=now - HOUR)
    assert (err.value.status_code, err.value.model.status) == (400, 400)
    assert err.value.model.detail.startswith("ingestedAtTo: ")


# --- grants ------------------------------------------------------------------------------------


def test_a_grant_takes_effect_from_the_start_of_its_minute(om):
    """As in OpenMeter, `effectiveAt` is truncated to the minute, and the expiry follows it."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    sent = datetime(2026, 1, 5, 12, 30, 45, 123000, tzinfo=UTC)
    created = grant(om, 5, effective_at=sent, expiration=ExpirationPeriod(duration="HOUR", count=2))
    assert created.effective_at == datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    assert created.expires_at == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    listed = om.customer_entitlement_v2.get_grants("acme", "tokens").items_property[0]
    assert listed.effective_at == created.effective_at


def test_a_recurring_grants_anchor_is_truncated_to_the_minute(om):
    """The recurrence anchor is truncated too, so the grant recurs on whole minutes."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    anchor = datetime(2026, 1, 5, 12, 30, 33, tzinfo=UTC)
    created = grant(om, 5, effective_at=anchor,
                    recurrence=RecurringPeriodCreateInput(interval="DAY", anchor=anchor))
    assert created.recurrence.anchor == datetime(2026, 1, 5, 12, 30, tzinfo=UTC)


def test_usage_in_the_minute_a_grant_starts_burns_it(om):
    """Usage a few seconds before `effectiveAt`, in the same minute, is usage the grant covers."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=0)
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    om.events.ingest_event(prompt("acme", 3, at=minute))
    grant(om, 5, effective_at=minute + timedelta(seconds=59))
    got = om.customer_entitlement.get_customer_entitlement_value("acme", "tokens")
    assert (got.usage, got.balance) == (3, 2)


# --- customers ---------------------------------------------------------------------------------


def _subscribe(live: Live, customer_key: str, plan: str) -> None:
    auth = {"Authorization": f"Bearer {live.keys['admin']}"}
    with httpx.Client(base_url=live.url, headers=auth, timeout=30) as native:
        if native.get(f"/v1/plans/{plan}").status_code == 404:
            for path, body in [
                ("/v1/plans", {"key": plan, "name": plan.title(), "entitlements": [
                    {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 10}]}),
                (f"/v1/plans/{plan}/publish", None),
            ]:  # fmt: skip
                assert native.post(path, json=body).status_code in (200, 201)
        made = native.post("/v1/subscriptions", json={"customer": customer_key, "plan": plan})
        assert made.status_code == 201, made.text


def test_customers_list_plan_key_keeps_the_customers_subscribed_to_that_plan(om, live):
    """`planKey` lists the customers whose subscription is on that plan, and only them."""
    tokens_feature(om)
    for key in ("acme", "globex", "initech"):
        customer(om, key)
    _subscribe(live, "acme", "pro")
    _subscribe(live, "globex", "basic")
    listed = om.customers.list(plan_key="pro")
    assert [c.key for c in listed.items_property] == ["acme"]
    assert listed.total_count == 1
    assert om.customers.list(plan_key="enterprise").items_property == []


def test_a_customer_with_an_active_entitlement_cannot_be_deleted(om):
    """As in OpenMeter: a 409 asking to remove the entitlements first; the customer stays."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    with pytest.raises(ResourceExistsError) as err:
        om.customers.delete("acme")
    assert "active entitlements" in err.value.response.json()["detail"]
    assert om.customers.get("acme").key == "acme"


def test_a_customer_whose_entitlements_were_deleted_can_be_deleted(om):
    """Once its entitlements are removed the customer goes, and lists no longer show it."""
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=10)
    om.customer_entitlements_v2.delete("acme", ent["id"])
    om.customers.delete("acme")
    assert om.customers.list(key="acme").items_property == []


# --- subjects ----------------------------------------------------------------------------------


def test_concurrent_upserts_of_one_new_subject_all_succeed(live):
    """Upserts racing to create one subject each answer 200 and leave one subject (the loser
    of the create race got a 500 on PostgreSQL)."""
    def upsert(key: str, name: str) -> int:
        with live.client() as client:
            try:
                client.subjects.upsert([SubjectUpsert(key=key, display_name=name)])
            except HttpResponseError as exc:
                return exc.status_code or 0
            return 200

    with ThreadPoolExecutor(8) as pool:
        for round_ in range(4):
            key = f"device-{round_}"
            answers = list(pool.map(lambda i, key=key: upsert(key, f"n{i}"), range(8)))
            assert answers == [200] * 8
    with live.client() as client:
        assert [s.key for s in client.subjects.list()] == [f"device-{r}" for r in range(4)]


# --- deeply nested JSON text in parameters -----------------------------------------------------

_DEEP = "[" * 4000 + "]" * 4000  # deeper than Python's recursion limit, shorter than 8192 characters


def test_a_static_config_nested_too_deeply_is_a_400_naming_config(om):
    """Config is JSON text the server parses: nesting it past what a parser holds is bad input."""
    customer(om)
    om.features.create(FeatureCreateInputs(key="limits", name="Limits"))
    with pytest.raises(HttpResponseError) as err:
        om.customer_entitlements_v2.post(
            "acme", EntitlementStaticCreateInputs(type="static", feature_key="limits", config=_DEEP)
        )
    assert (err.value.status_code, err.value.model.detail) == (400, "config: is not valid JSON")


@pytest.mark.parametrize("param", ["advancedMeterGroupByFilters", "filterGroupBy"])
def test_a_meter_query_filter_nested_too_deeply_is_a_400_naming_it(om, live, param):
    tokens_meter(om)
    answer = httpx.get(f"{live.url}/api/v1/meters/tokens_total/query", params={param: _DEEP},
                       headers={"Authorization": f"Bearer {live.keys['read']}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(f"{param}: ")


def test_an_events_filter_nested_too_deeply_is_a_400_naming_filter(live):
    answer = httpx.get(f"{live.url}/api/v2/events", params={"filter": _DEEP},
                       headers={"Authorization": f"Bearer {live.keys['read']}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("filter: ")


# --- entitlements ------------------------------------------------------------------------------


def test_a_measure_usage_from_out_of_range_is_a_400_naming_only_it(om):
    """The error names the field the client sent, not our own names for what it becomes."""
    customer(om)
    tokens_feature(om)
    with pytest.raises(HttpResponseError) as err:
        metered(om, measure_usage_from=datetime(1969, 12, 31, tzinfo=UTC))
    assert err.value.status_code == 400
    assert [e["field"] for e in err.value.response.json()["errors"]] == ["measureUsageFrom"]


def test_a_rollover_error_names_both_fields_as_the_client_sent_them(om):
    """minRolloverAmount above maxRolloverAmount is refused in the client's own field names."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    with pytest.raises(HttpResponseError) as err:
        grant(om, 5, min_rollover_amount=3, max_rollover_amount=1)
    assert err.value.status_code == 400
    assert err.value.model.detail == "maxRolloverAmount: must not be less than minRolloverAmount (3)"


def test_a_subject_upsert_keeps_the_fields_it_leaves_out(om):
    """As OpenMeter documents: an existing subject is partially updated with the fields sent."""
    om.subjects.upsert([SubjectUpsert(key="device-1", display_name="Device", metadata={"site": "lab"})])
    renamed = om.subjects.upsert([SubjectUpsert(key="device-1", display_name="Device One")])[0]
    assert (renamed.display_name, renamed.metadata) == ("Device One", {"site": "lab"})
    retagged = om.subjects.upsert([SubjectUpsert(key="device-1", metadata={"site": "hq"})])[0]
    assert (retagged.display_name, retagged.metadata) == ("Device One", {"site": "hq"})
    assert om.subjects.get("device-1").metadata == {"site": "hq"}


def test_a_subject_upsert_sending_null_clears_that_field(om):
    """A field sent as null is cleared; the others stay."""
    om.subjects.upsert([SubjectUpsert(key="device-1", display_name="Device", metadata={"site": "lab"})])
    cleared = om.subjects.upsert([{"key": "device-1", "displayName": None}])[0]
    assert (cleared.display_name, cleared.metadata) == (None, {"site": "lab"})


def test_the_value_of_a_replaced_entitlement_by_its_old_id_is_not_found(om):
    """After an override the old entitlement is no longer active: its value now is a 404 (it
    answered access with the old limits), as OpenMeter answers; the new id has the value."""
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=5)
    new = om.customer_entitlements_v2.override(
        "acme", "tokens", EntitlementMeteredV2CreateInputs(
            type="metered", feature_key="tokens", issue_after_reset=7,
            usage_period=RecurringPeriodCreateInput(interval="MONTH")))  # fmt: skip
    values = om.customer_entitlement_v2
    with pytest.raises(ResourceNotFoundError):
        values.get_customer_entitlement_value("acme", old["id"])
    assert values.get_customer_entitlement_value("acme", new["id"]).total_available_grant_amount == 7


def test_a_deleted_entitlements_value_before_it_was_deleted_is_still_answered(om):
    """Only the instants after its end are refused: the value at a time it was live stands."""
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=5)
    live_then = datetime.now(UTC)
    om.customer_entitlements_v2.delete("acme", ent["id"])
    got = om.customer_entitlement_v2.get_customer_entitlement_value("acme", ent["id"], time=live_then)
    assert (got.has_access, got.balance) == (True, 5)


def test_a_grant_on_a_replaced_entitlement_by_its_old_id_is_not_found(om):
    """A grant names a live entitlement: the id of one an override replaced is a 404 (the
    grant was made and answered under the old id), as in OpenMeter."""
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=5)
    om.customer_entitlements_v2.override(
        "acme", "tokens", EntitlementMeteredV2CreateInputs(
            type="metered", feature_key="tokens", issue_after_reset=7,
            usage_period=RecurringPeriodCreateInput(interval="MONTH")))  # fmt: skip
    with pytest.raises(ResourceNotFoundError):
        om.customer_entitlement_v2.create_customer_entitlement_grant(
            "acme", old["id"], EntitlementGrantCreateInputV2(amount=3, effective_at=datetime.now(UTC)))
    assert om.grants_v2.list(customer=["acme"]).items_property == []


# --- meters ------------------------------------------------------------------------------------


def test_a_meter_with_event_from_counts_only_the_events_from_then(om):
    """Stored events before `eventFrom` are skipped by the backfill, late ones by the ingest,
    and the meter answers its `eventFrom`."""
    om.events.ingest_events([prompt(tokens=3, at=T0), prompt(tokens=5, at=T0 + 2 * HOUR)])
    created = om.meters.create(MeterCreate(slug="tokens_total", aggregation="SUM", event_type="prompt",
                                           value_property="$.tokens", event_from=T0 + HOUR))
    assert created.event_from == T0 + HOUR
    om.events.ingest_events([prompt(tokens=7, at=T0 + 30 * timedelta(minutes=1)), prompt(tokens=11, at=T0 + 3 * HOUR)])
    total = om.meters.query_json("tokens_total", from_parameter=T0, to=T0 + 4 * HOUR)
    assert [row.value for row in total.data] == [16]
    assert om.meters.get("tokens_total").event_from == T0 + HOUR


# --- deleted resources -------------------------------------------------------------------------


def test_customers_list_with_include_deleted_lists_deleted_ones_with_their_deleted_at(om):
    """Left out by default; with includeDeleted, listed and counted, saying when they went."""
    customer(om, "acme")
    customer(om, "bolt")
    om.customers.delete("acme")
    assert [c.key for c in om.customers.list().items_property] == ["bolt"]
    both = om.customers.list(include_deleted=True)
    assert (sorted(c.key for c in both.items_property), both.total_count) == (["acme", "bolt"], 2)
    gone = {c.key: c.deleted_at for c in both.items_property}
    assert gone["acme"] is not None and gone["bolt"] is None
    assert [c.key for c in om.customers.list(include_deleted=True, key="acm").items_property] == ["acme"]


def test_meters_list_with_include_deleted_lists_deleted_ones_with_their_deleted_at(om):
    """A deleted meter is out of the list unless asked for, then marked by deletedAt."""
    tokens_meter(om)
    om.meters.create(MeterCreate(slug="calls", event_type="call", aggregation="COUNT"))
    om.meters.delete("calls")
    assert [m.slug for m in om.meters.list()] == ["tokens_total"]
    listed = {m.slug: m.deleted_at for m in om.meters.list(include_deleted=True)}
    assert sorted(listed) == ["calls", "tokens_total"]
    assert listed["calls"] is not None and listed["tokens_total"] is None


def test_a_customers_billing_address_is_kept_and_answered(om):
    """Created with a billing address, the customer is read back with it; a replace without one clears it."""
    om.customers.create(CustomerCreate(
        key="acme", name="Acme", usage_attribution=CustomerUsageAttribution(subject_keys=["acme"]),
        billing_address=Address(country="US", postal_code="94105", city="San Francisco", line1="1 Market St")))
    got = om.customers.get("acme").billing_address
    assert (got.country, got.postal_code, got.city, got.line1, got.line2) == ("US", "94105", "San Francisco",
                                                                            "1 Market St", None)
    listed = om.customers.list(key="acme").items_property[0].billing_address
    assert listed.country == "US"
    om.customers.update("acme", CustomerReplaceUpdate(name="Acme"))
    assert om.customers.get("acme").billing_address is None
