"""Fields of OpenMeter's models a client sends and reads back, driven by the official SDK.

Every field the SDK's customer, subject, meter, feature, entitlement and grant models carry is
either kept and answered as sent, or refused with a 400 naming it: none is accepted and lost.
The same live server as the other SDK tests (uvicorn in a thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter.models import (
    EntitlementBooleanCreateInputs,
    EntitlementStaticCreateInputs,
    FeatureCreateInputs,
    MeterCreate,
    MeterUpdate,
    RecurringPeriodCreateInput,
    ResetEntitlementUsageInput,
    SubjectUpsert,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import (
    customer,
    grant,
    metered,
    plain_feature,
    tokens_feature,
)
from tests.api.test_openmeter_sdk import tokens_meter

live, om = sdk.live, sdk.om

PERIOD_START = datetime(2024, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2024, 2, 1, tzinfo=UTC)


def _refused(call, field: str) -> str:
    """The 400 a call gets, checked to name `field`; returns its detail."""
    with pytest.raises(HttpResponseError) as err:
        call()
    assert err.value.status_code == 400
    problem = err.value.response.json()
    assert field in {e["field"] for e in problem["errors"]}, problem
    return problem["detail"]


# --- meters ------------------------------------------------------------------------------------


def test_a_meters_metadata_is_kept_and_answered_by_get_and_list(om):
    """Sent on create, read back as sent; an update that sends it replaces it, one that leaves it out keeps it."""
    created = om.meters.create(MeterCreate(slug="calls", event_type="call", aggregation="COUNT",
                                           metadata={"team": "api", "cost-center": "42"}))
    assert created.metadata == {"team": "api", "cost-center": "42"}
    assert om.meters.get("calls").metadata == {"team": "api", "cost-center": "42"}
    assert [m.metadata for m in om.meters.list()] == [{"team": "api", "cost-center": "42"}]
    renamed = om.meters.update("calls", MeterUpdate(name="API calls"))
    assert (renamed.name, renamed.metadata) == ("API calls", {"team": "api", "cost-center": "42"})
    retagged = om.meters.update("calls", MeterUpdate(metadata={"team": "platform"}))
    assert retagged.metadata == om.meters.get("calls").metadata == {"team": "platform"}


def test_a_meter_without_metadata_reads_back_an_empty_map(om):
    assert tokens_meter(om).metadata == {}


def test_meter_metadata_with_a_value_that_is_not_text_is_a_400_naming_it(om):
    """OpenMeter's metadata maps text to text: a number is refused, not turned into text."""
    _refused(lambda: om.meters.create({"slug": "calls", "eventType": "call", "aggregation": "COUNT",
                                       "metadata": {"team": 7}}), "metadata.team")
    with pytest.raises(ResourceNotFoundError):
        om.meters.get("calls")


# --- features ----------------------------------------------------------------------------------


def test_a_features_metadata_is_answered_as_sent_by_get_and_list(om):
    plain_feature(om, "sso")
    om.features.create(FeatureCreateInputs(key="export", name="Export", metadata={"tier": "pro"}))
    assert om.features.get("export").metadata == {"tier": "pro"}
    assert {f["key"]: f["metadata"] for f in om.features.list()} == {"sso": {}, "export": {"tier": "pro"}}


def test_a_features_advanced_group_filter_is_answered_as_sent_and_the_plain_one_in_that_form_too(om):
    """As OpenMeter answers a feature: its group filters both as `meterGroupByFilters` and as `$eq` filters."""
    tokens_meter(om)
    advanced = om.features.create({"key": "gpt4", "name": "GPT-4", "meterSlug": "tokens_total",
                                   "advancedMeterGroupByFilters": {"model": {"$eq": "gpt-4"}}})
    plain = om.features.create(FeatureCreateInputs(key="gpt3", name="GPT-3", meter_slug="tokens_total",
                                                   meter_group_by_filters={"model": "gpt-3"}))
    assert advanced.advanced_meter_group_by_filters["model"].eq == "gpt-4"
    assert om.features.get("gpt4").meter_group_by_filters == {"model": "gpt-4"}
    assert plain.advanced_meter_group_by_filters["model"].eq == "gpt-3"
    assert {f["key"]: f["advancedMeterGroupByFilters"] for f in om.features.list()} == {
        "gpt4": {"model": {"$eq": "gpt-4"}}, "gpt3": {"model": {"$eq": "gpt-3"}}}


def test_feature_metadata_with_a_value_that_is_not_text_is_a_400_naming_it(om):
    _refused(lambda: om.features.create({"key": "export", "name": "Export", "metadata": {"seats": [1, 2]}}),
             "metadata.seats")


# --- customers and grants ----------------------------------------------------------------------


def test_customer_metadata_with_a_value_that_is_not_text_is_a_400_naming_it(om):
    _refused(lambda: om.customers.create({"name": "Acme", "key": "acme", "metadata": {"vip": True}}),
             "metadata.vip")
    customer(om)
    _refused(lambda: om.customers.update("acme", {"name": "Acme", "metadata": {"vip": True}}), "metadata.vip")


def test_a_grants_annotations_are_kept_and_answered(om):
    """The SDK's v2 grant input carries annotations (of any JSON): read back as sent, by the create and the list."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=1)
    created = grant(om, 5, annotations={"source": "promo", "batch": 7})
    assert created.annotations == {"source": "promo", "batch": 7}
    listed = om.customer_entitlement_v2.get_grants("acme", "tokens")
    assert [g.annotations for g in listed.items_property] == [{"source": "promo", "batch": 7}]


def test_grant_metadata_with_a_value_that_is_not_text_is_a_400_naming_it(om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=1)
    _refused(lambda: grant(om, 5, metadata={"order": 17}), "metadata.order")


# --- entitlements ------------------------------------------------------------------------------


def test_an_entitlements_metadata_is_kept_and_answered_by_get_and_list(om):
    """Of every kind: sent on create, read back as sent by get and list."""
    customer(om)
    tokens_feature(om)
    plain_feature(om, "sso")
    plain_feature(om, "models")
    created = metered(om, issue_after_reset=5, metadata={"contract": "C-1"})
    om.customer_entitlements_v2.post("acme", EntitlementBooleanCreateInputs(
        type="boolean", feature_key="sso", metadata={"granted-by": "sales"}))
    om.customer_entitlements_v2.post("acme", EntitlementStaticCreateInputs(
        type="static", feature_key="models", config='{"n": 1}'))
    assert created["metadata"] == {"contract": "C-1"}
    assert om.customer_entitlements_v2.get("acme", "tokens")["metadata"] == {"contract": "C-1"}
    listed = om.customer_entitlements_v2.list("acme").items_property
    assert {e["featureKey"]: e["metadata"] for e in listed} == {
        "tokens": {"contract": "C-1"}, "sso": {"granted-by": "sales"}, "models": {}}


def test_an_entitlements_metadata_outlives_a_usage_reset_and_an_override_replaces_it(om):
    """A reset continues the same entitlement (its metadata too); an override is a new one, with the body's."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=5, metadata={"contract": "C-1"})
    om.customer_entitlement_v2.reset_customer_entitlement("acme", "tokens", ResetEntitlementUsageInput())
    assert om.customer_entitlements_v2.get("acme", "tokens")["metadata"] == {"contract": "C-1"}
    om.customer_entitlements_v2.override("acme", "tokens", {
        "type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "MONTH"},
        "issueAfterReset": 9, "metadata": {"contract": "C-2"}})
    assert om.customer_entitlements_v2.get("acme", "tokens")["metadata"] == {"contract": "C-2"}


def test_entitlement_metadata_with_a_value_that_is_not_text_is_a_400_naming_it(om):
    customer(om)
    plain_feature(om, "sso")
    _refused(lambda: om.customer_entitlements_v2.post(
        "acme", {"type": "boolean", "featureKey": "sso", "metadata": {"seats": 3}}), "metadata.seats")
    assert om.customer_entitlements_v2.list("acme").total_count == 0


# --- usage periods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "named", "iso"),
    [("P1D", "DAY", "P1D"), ("PT24H", "DAY", "P1D"), ("P7D", "WEEK", "P1W"), ("P1W", "WEEK", "P1W"),
     ("P1M", "MONTH", "P1M"), ("P12M", "YEAR", "P1Y"), ("P1Y", "YEAR", "P1Y"), ("p1m", "MONTH", "P1M")],
)  # fmt: skip
def test_an_iso_interval_of_one_day_week_month_or_year_is_that_usage_period(om, interval, named, iso):
    """In UTC, where OpenMeter periods run, 24 hours is a day, 7 days a week and 12 months a year."""
    customer(om)
    tokens_feature(om)
    created = metered(om, usage_period=RecurringPeriodCreateInput(interval=interval, anchor=PERIOD_START))
    assert (created["usagePeriod"]["interval"], created["usagePeriod"]["intervalISO"]) == (named, iso)


@pytest.mark.parametrize(
    ("interval", "why"),
    [("P2W", "2 weeks"), ("P3M", "3 months"), ("PT1H", "1 hour"), ("P1M15D", "1 month 15 days"),
     ("FORTNIGHT", "ISO 8601")],
)  # fmt: skip
def test_an_interval_no_usage_period_can_follow_is_a_400_saying_why(om, interval, why):
    """Usage periods are one day, week, month or year: any other length is refused, and the 400 says so."""
    customer(om)
    tokens_feature(om)
    detail = _refused(lambda: metered(om, usage_period=RecurringPeriodCreateInput(interval=interval)),
                      "usagePeriod.interval")
    assert why in detail and "one day, week, month or year" in detail, detail


def test_a_grant_recurrence_of_an_interval_no_period_can_follow_is_a_400_naming_it(om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=1)
    detail = _refused(lambda: grant(om, 5, recurrence=RecurringPeriodCreateInput(interval="P2W")),
                      "recurrence.interval")
    assert "2 weeks" in detail


# --- subjects ----------------------------------------------------------------------------------


def test_a_subjects_stripe_customer_id_and_current_period_are_kept_and_answered(om):
    """Every field of the SDK's SubjectUpsert is read back, by the upsert, get and list."""
    upserted = om.subjects.upsert([SubjectUpsert(
        key="device-1", stripe_customer_id="cus_N1", current_period_start=PERIOD_START,
        current_period_end=PERIOD_END)])[0]
    got, listed = om.subjects.get("device-1"), om.subjects.list()[0]
    for subject in (upserted, got, listed):
        assert (subject.stripe_customer_id, subject.current_period_start, subject.current_period_end) == (
            "cus_N1", PERIOD_START, PERIOD_END)
    naive = om.subjects.upsert([{"key": "device-2", "currentPeriodStart": "2024-01-01T00:00:00"}])[0]
    assert naive.current_period_start == PERIOD_START  # without an offset: UTC, as everywhere here


def test_a_subject_upsert_keeps_the_stripe_customer_id_it_leaves_out_and_clears_a_null(om):
    om.subjects.upsert([SubjectUpsert(key="device-1", stripe_customer_id="cus_N1")])
    renamed = om.subjects.upsert([SubjectUpsert(key="device-1", display_name="Device")])[0]
    assert (renamed.display_name, renamed.stripe_customer_id) == ("Device", "cus_N1")
    cleared = om.subjects.upsert([{"key": "device-1", "stripeCustomerId": None}])[0]
    assert (cleared.display_name, cleared.stripe_customer_id) == ("Device", None)


# --- deleted customers -------------------------------------------------------------------------


def test_a_deleted_customer_is_read_by_its_id_with_its_deleted_at(om):
    """As in OpenMeter: by id it is still answered, marked by deletedAt; by key it is gone."""
    created = customer(om)
    om.customers.delete("acme")
    gone = om.customers.get(created.id)
    assert (gone.id, gone.key, gone.usage_attribution.subject_keys) == (created.id, "acme", [])
    assert gone.deleted_at is not None and gone.deleted_at >= gone.created_at
    with pytest.raises(ResourceNotFoundError):
        om.customers.get("acme")


def test_a_key_reused_after_a_delete_reads_the_live_customer_and_the_old_id_the_deleted_one(om):
    old = customer(om)
    om.customers.delete("acme")
    new = customer(om)
    assert om.customers.get("acme").id == new.id and om.customers.get("acme").deleted_at is None
    assert om.customers.get(old.id).deleted_at is not None
