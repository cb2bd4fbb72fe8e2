"""OpenMeter features, entitlements, values and access, driven by the official SDK.

The same live server as the other SDK tests (uvicorn in a thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from calendar import monthrange
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from openmeter.aio import Client as AsyncClient
from openmeter.models import (
    CustomerCreate,
    CustomerUsageAttribution,
    EntitlementBooleanCreateInputs,
    EntitlementGrantCreateInputV2,
    EntitlementMeteredV2CreateInputs,
    EntitlementStaticCreateInputs,
    ExpirationPeriod,
    FeatureCreateInputs,
    RecurringPeriodCreateInput,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_sdk import Live, prompt, tokens_meter

from allotment.types import utcnow

live, om = sdk.live, sdk.om  # the live server and an admin client, as fixtures here too

# --- builders ----------------------------------------------------------------------------------


def customer(om: openmeter.Client, key: str = "acme", *subjects: str) -> Any:
    return om.customers.create(
        CustomerCreate(
            key=key,
            name=key.title(),
            usage_attribution=CustomerUsageAttribution(subject_keys=list(subjects or [key])),
        )
    )


def tokens_feature(om: openmeter.Client, key: str = "tokens", **extra: Any) -> Any:
    tokens_meter(om)
    return om.features.create(
        FeatureCreateInputs(key=key, name="Tokens", meter_slug="tokens_total", **extra)
    )


def plain_feature(om: openmeter.Client, key: str) -> Any:
    return om.features.create(FeatureCreateInputs(key=key, name=key.upper()))


def metered(
    om: openmeter.Client, customer_key: str = "acme", feature: str = "tokens", **extra: Any
) -> Any:
    """The created entitlement, as the JSON object the SDK hands back for this union type."""
    inputs = {"usage_period": RecurringPeriodCreateInput(interval="MONTH")} | extra
    return om.customer_entitlements_v2.post(
        customer_key,
        EntitlementMeteredV2CreateInputs(type="metered", feature_key=feature, **inputs),
    )


def use(om: openmeter.Client, tokens: float, subject: str = "acme") -> None:
    """Usage of the tokens meter, now (usage counts from an entitlement's creation)."""
    om.events.ingest_event(prompt(subject, tokens, at=utcnow()))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def value(om: openmeter.Client, feature: str = "tokens", customer_key: str = "acme") -> Any:
    return om.customer_entitlement.get_customer_entitlement_value(customer_key, feature)


# --- features ----------------------------------------------------------------------------------


def test_feature_create_get_list_and_archive(om):
    """A feature keeps its meter and group filter; deleting archives it."""
    created = tokens_feature(om, meter_group_by_filters={"model": "gpt-4"}, metadata={"tier": "a"})
    assert (created.key, created.name, created.meter_slug) == ("tokens", "Tokens", "tokens_total")
    assert created.meter_group_by_filters == {"model": "gpt-4"}
    assert created.metadata == {"tier": "a"} and created.archived_at is None
    plain_feature(om, "sso")

    assert om.features.get(created.id).key == "tokens"
    assert om.features.get("tokens").id == created.id
    # The SDK hands list results back as plain JSON: a bare array, or a page with `page`.
    assert [f["key"] for f in om.features.list()] == ["tokens", "sso"]
    assert [f["key"] for f in om.features.list(meter_slug=["tokens_total"])] == ["tokens"]
    page = om.features.list(page=1, page_size=1, order_by="key")
    assert (page["totalCount"], [f["key"] for f in page["items"]]) == (2, ["sso"])

    om.features.delete("sso")
    assert [f["key"] for f in om.features.list()] == ["tokens"]
    archived = [f for f in om.features.list(include_archived=True) if f["key"] == "sso"]
    assert archived and archived[0]["archivedAt"] is not None
    assert om.features.get("sso").archived_at is not None  # read back, as OpenMeter does


def test_duplicate_feature_is_resource_exists(om):
    plain_feature(om, "sso")
    with pytest.raises(ResourceExistsError):
        plain_feature(om, "sso")


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"key": "Not A Key", "name": "x"}, "key"),
        ({"key": "tokens", "name": "x", "meter_slug": "nope"}, "meterSlug"),
        (
            {"key": "tokens", "name": "x", "meter_slug": "tokens_total",
             "meter_group_by_filters": {"region": "eu"}},
            "meterGroupByFilters.region",
        ),
    ],
)  # fmt: skip
def test_bad_feature_is_a_400_naming_the_field(om, inputs, field):
    tokens_meter(om)
    with pytest.raises(HttpResponseError) as err:
        om.features.create(FeatureCreateInputs(**inputs))
    assert err.value.status_code == 400
    assert field in {e["field"] for e in err.value.response.json()["errors"]}


# --- entitlements ------------------------------------------------------------------------------


def test_usage_burns_the_balance_and_a_hard_limit_ends_access(om):
    """Events ingested through the SDK show up in the value; at the limit access stops."""
    customer(om)
    tokens_feature(om)
    created = metered(om, issue_after_reset=100)
    assert (created["type"], created["featureKey"], created["customerKey"]) == (
        "metered", "tokens", "acme",
    )  # fmt: skip
    assert created["isSoftLimit"] is False and created["issueAfterReset"] == 100
    assert created["usagePeriod"]["interval"] == "MONTH"
    period = created["currentUsagePeriod"]
    assert _at(period["from"]) <= datetime.now(UTC) < _at(period["to"])

    fresh = value(om)
    assert (fresh.has_access, fresh.balance, fresh.usage, fresh.overage) == (True, 100, 0, 0)
    assert fresh.total_available_grant_amount == 100

    use(om, 60)
    mid = value(om)
    assert (mid.has_access, mid.balance, mid.usage, mid.overage) == (True, 40, 60, 0)

    use(om, 40)
    spent = value(om)
    assert (spent.has_access, spent.balance, spent.usage) == (False, 0, 100)


def test_usage_measured_from_an_earlier_instant_counts_the_events_since(om):
    """`measureUsageFrom` in the past, as an instant or the current period's start: usage the
    customer's events reported since then counts; what came before does not."""
    customer(om)
    tokens_feature(om)
    now = utcnow()
    om.events.ingest_event(prompt("acme", 100, at=now - timedelta(hours=5)))
    om.events.ingest_event(prompt("acme", 7, at=now - timedelta(hours=2)))
    created = metered(om, issue_after_reset=50, measure_usage_from=now - timedelta(hours=3))
    assert _at(created["measureUsageFrom"]) == minute_of(now - timedelta(hours=3))
    assert (value(om).usage, value(om).balance) == (7, 43)
    anchor = now - timedelta(days=1, hours=4)  # daily periods: this one began 4 hours ago
    om.features.create(FeatureCreateInputs(key="daily", name="Daily", meter_slug="tokens_total"))
    metered(om, feature="daily", issue_after_reset=50, measure_usage_from="CURRENT_PERIOD_START",
            usage_period=RecurringPeriodCreateInput(interval="DAY", anchor=anchor))
    assert value(om, "daily").usage == 7


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def test_usage_is_measured_from_the_start_of_the_minute_as_in_openmeter(om):
    """OpenMeter measures from whole minutes: `measureUsageFrom` and the period's anchor are
    truncated to the minute, so usage sent earlier in that minute counts (by default, the
    minute the entitlement is created in)."""
    customer(om)
    tokens_feature(om)
    minute = minute_of(utcnow() - timedelta(hours=3))
    om.events.ingest_event(prompt("acme", 5, at=minute + timedelta(seconds=10)))
    om.events.ingest_event(prompt("acme", 100, at=minute - timedelta(seconds=1)))
    created = metered(om, measure_usage_from=minute + timedelta(seconds=40), usage_period=RecurringPeriodCreateInput(
        interval="DAY", anchor=minute + timedelta(seconds=40)))
    assert _at(created["measureUsageFrom"]) == _at(created["usagePeriod"]["anchor"]) == minute
    assert value(om).usage == 5
    om.features.create(FeatureCreateInputs(key="now", name="Now", meter_slug="tokens_total"))
    default = _at(metered(om, feature="now")["measureUsageFrom"])
    assert default == minute_of(default) and utcnow() - default < timedelta(minutes=1)


def test_the_value_at_a_past_instant_counts_only_the_usage_before_it(om):
    """`time` asks for the value as it stood then: usage reported for later instants of the
    period is left out (v1 and v2 alike)."""
    customer(om)
    tokens_feature(om)
    now = utcnow()
    metered(om, issue_after_reset=100, measure_usage_from=now - timedelta(hours=5))
    om.events.ingest_event(prompt("acme", 10, at=now - timedelta(hours=4)))
    om.events.ingest_event(prompt("acme", 20, at=now - timedelta(hours=2)))
    then = now - timedelta(hours=3)
    v1 = om.customer_entitlement.get_customer_entitlement_value("acme", "tokens", time=then)
    v2 = om.customer_entitlement_v2.get_customer_entitlement_value("acme", "tokens", time=then)
    assert (v1.usage, v1.balance, v2.usage, v2.balance) == (10, 90, 10, 90)
    assert (value(om).usage, value(om).balance) == (30, 70)
    with pytest.raises(HttpResponseError) as caught:
        om.customer_entitlement.get_customer_entitlement_value("acme", "tokens", time=now + timedelta(days=400))
    assert caught.value.status_code == 400 and "time" in caught.value.model.detail


def test_soft_limit_keeps_access_and_reports_overage(om):
    customer(om)
    tokens_feature(om)
    created = metered(om, issue_after_reset=10, is_soft_limit=True, preserve_overage_at_reset=True)
    assert created["isSoftLimit"] is True and created["preserveOverageAtReset"] is True

    use(om, 25)
    over = value(om)
    assert (over.has_access, over.balance, over.usage, over.overage) == (True, 0, 25, 15)


@pytest.mark.parametrize(("preserve", "balance", "overage"), [(True, 0, 5), (False, 10, 0)])
def test_overage_at_reset_is_carried_or_forgiven(om, preserve, balance, overage):
    """25 used of 10 on a soft limit: the next day's 10 pay the 15 over first (5 still over),
    or start afresh; either way the next day has no usage of its own yet."""
    customer(om)
    tokens_feature(om)
    metered(
        om, issue_after_reset=10, is_soft_limit=True, preserve_overage_at_reset=preserve,
        usage_period=RecurringPeriodCreateInput(interval="DAY"),
    )  # fmt: skip
    use(om, 25)
    tomorrow = om.customer_entitlement.get_customer_entitlement_value(
        "acme", "tokens", time=utcnow() + timedelta(days=1)
    )
    assert (tomorrow.usage, tomorrow.balance, tomorrow.overage) == (0, balance, overage)
    assert tomorrow.has_access is True


def _carried_overage_of_50(om: openmeter.Client) -> None:
    """Daily periods, 100 each: 150 used in the previous period, 10 in this one."""
    customer(om)
    tokens_feature(om)
    now = utcnow()
    metered(
        om, issue_after_reset=100, is_soft_limit=True, preserve_overage_at_reset=True,
        measure_usage_from=now - timedelta(hours=26),
        usage_period=RecurringPeriodCreateInput(interval="DAY", anchor=now - timedelta(hours=4)),
    )  # fmt: skip
    om.events.ingest_event(prompt("acme", 150, at=now - timedelta(hours=20)))
    om.events.ingest_event(prompt("acme", 10, at=now - timedelta(hours=1)))


def test_carried_overage_lowers_the_balance_but_is_not_usage_of_the_period(om):
    """As in OpenMeter: usage is the period's own (10), the 50 carried only lower the balance."""
    _carried_overage_of_50(om)
    v1 = value(om)
    v2 = om.customer_entitlement_v2.get_customer_entitlement_value("acme", "tokens")
    assert (v1.usage, v1.balance, v1.overage, v1.has_access) == (10, 40, 0, True)
    assert (v2.usage, v2.balance, v2.overage) == (10, 40, 0)


def test_carried_overage_once_fixed_by_a_check_is_still_not_usage(om, live):
    """A native check fixes the carry into the period's counter; the OpenMeter value still
    reports the period's own usage, the native one counts the carry in it (documented)."""
    _carried_overage_of_50(om)
    auth = {"Authorization": f"Bearer {live.keys['admin']}"}
    checked = httpx.post(f"{live.url}/v1/check", headers=auth, json={
        "customer": "acme", "feature": "tokens", "quantity": 1, "consume": True,
    })  # fmt: skip
    assert checked.status_code == 200, checked.text
    got = value(om)
    assert (got.usage, got.balance) == (11, 39)
    native = httpx.get(f"{live.url}/v1/customers/acme/entitlements/tokens", headers=auth).json()
    assert native["usage"] == 61


def test_iso_interval_and_anchor_set_the_usage_period(om):
    """P1W anchored on a Monday: the current period is the week that began on a Monday."""
    customer(om)
    tokens_feature(om)
    anchor = datetime(2024, 1, 1, 9, tzinfo=UTC)  # a Monday
    created = metered(om, usage_period=RecurringPeriodCreateInput(interval="P1W", anchor=anchor))
    assert created["usagePeriod"]["interval"] == "WEEK"
    assert created["usagePeriod"]["intervalISO"] == "P1W"
    assert _at(created["usagePeriod"]["anchor"]) == anchor
    start, end = (_at(created["currentUsagePeriod"][k]) for k in ("from", "to"))
    assert end - start == timedelta(weeks=1)
    assert start.weekday() == 0 and start.hour == 9


def test_value_without_an_entitlement_then_is_no_access(om):
    """As in OpenMeter, the v1 value of a feature the customer is not entitled to (at `time`, or
    at all, or no such feature) is `hasAccess: false`, not a 404; an unknown customer is a 404."""
    customer(om)
    tokens_feature(om)
    plain_feature(om, "sso")
    metered(om, issue_after_reset=5)
    assert value(om).has_access is True
    before = om.customer_entitlement.get_customer_entitlement_value(
        "acme", "tokens", time=datetime(2020, 1, 1, tzinfo=UTC)
    )
    for got in (before, value(om, "sso"), value(om, "nope")):
        assert got.as_dict() == {"hasAccess": False}
    with pytest.raises(ResourceNotFoundError):
        value(om, "tokens", "nobody")


def test_boolean_and_static_entitlements(om):
    """Boolean access, and a static config that comes back as the JSON string it was sent as."""
    customer(om)
    plain_feature(om, "sso")
    plain_feature(om, "models")
    om.customer_entitlements_v2.post(
        "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
    )
    config = {"models": ["gpt-4", "gpt-3"], "max": 3}
    static = om.customer_entitlements_v2.post(
        "acme",
        EntitlementStaticCreateInputs(
            type="static", feature_key="models", config=json.dumps(config)
        ),
    )
    assert static["type"] == "static" and json.loads(static["config"]) == config

    assert value(om, "sso").has_access is True
    got = value(om, "models")
    assert got.has_access is True and json.loads(got.config) == config


def test_customer_access_lists_every_entitlement(om):
    customer(om)
    tokens_feature(om)
    plain_feature(om, "sso")
    plain_feature(om, "models")
    metered(om, issue_after_reset=3)
    om.customer_entitlements_v2.post(
        "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
    )
    om.customer_entitlements_v2.post(
        "acme", EntitlementStaticCreateInputs(type="static", feature_key="models", config='{"n":1}')
    )
    use(om, 3)

    access = om.customer.get_customer_access("acme").entitlements
    assert set(access) == {"tokens", "sso", "models"}
    assert access["tokens"].has_access is False and access["tokens"].usage == 3
    assert access["sso"].has_access is True
    assert json.loads(access["models"].config) == {"n": 1}


def test_list_get_and_delete_customer_entitlements(om):
    cust = customer(om)
    tokens_feature(om)
    plain_feature(om, "sso")
    ent = metered(om, issue_after_reset=5)
    om.customer_entitlements_v2.post(
        "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
    )

    listed = om.customer_entitlements_v2.list("acme")
    assert listed.total_count == 2
    assert [e["featureKey"] for e in listed.items_property] == ["tokens", "sso"]
    assert om.customer_entitlements_v2.get(cust.id, ent["id"])["featureKey"] == "tokens"
    assert om.customer_entitlements_v2.get("acme", "tokens")["id"] == ent["id"]

    om.customer_entitlements_v2.delete("acme", "tokens")
    live_ones = om.customer_entitlements_v2.list("acme").items_property
    assert [e["featureKey"] for e in live_ones] == ["sso"]
    assert value(om).as_dict() == {"hasAccess": False}
    deleted = om.customer_entitlements_v2.list("acme", include_deleted=True).items_property
    assert {e["featureKey"]: "deletedAt" in e for e in deleted} == {"tokens": True, "sso": False}
    metered(om, issue_after_reset=7)  # the feature is free to be entitled again
    assert value(om).balance == 7


def test_second_entitlement_to_a_feature_is_resource_exists(om):
    customer(om)
    plain_feature(om, "sso")
    sso = EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
    om.customer_entitlements_v2.post("acme", sso)
    with pytest.raises(ResourceExistsError) as err:
        om.customer_entitlements_v2.post("acme", sso)
    assert "override it" in err.value.model.detail and "delete it first" in err.value.model.detail


def test_unknown_customer_or_feature_is_not_found(om):
    customer(om)
    with pytest.raises(ResourceNotFoundError):
        om.customer_entitlements_v2.post(
            "nobody", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
        )
    with pytest.raises(ResourceNotFoundError):
        om.customer_entitlements_v2.post(
            "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="nope")
        )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "PT1H"}},
         "usagePeriod.interval"),
        ({"type": "metered", "featureKey": "tokens"}, "usagePeriod"),
        ({"type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "DAY"},
          "issueAfterReset": -1}, "issueAfterReset"),
        ({"type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "DAY"},
          "measureUsageFrom": "LAST_TUESDAY"}, "measureUsageFrom"),
        ({"type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "DAY"},
          "measureUsageFrom": "2999-01-01T00:00:00Z"}, "measureUsageFrom"),
        ({"type": "static", "featureKey": "tokens", "config": "{not json"}, "config"),
        ({"type": "static", "featureKey": "tokens", "config": "[1, 2]"}, "config"),
        ({"type": "static", "featureKey": "tokens"}, "config"),
        ({"type": "boolean"}, "featureKey"),
        ({"type": "seats", "featureKey": "tokens"}, "type"),
    ],
)  # fmt: skip
def test_bad_entitlement_is_a_400_naming_the_field(om, body, field):
    customer(om)
    tokens_feature(om)
    with pytest.raises(HttpResponseError) as err:
        om.customer_entitlements_v2.post("acme", body)
    assert err.value.status_code == 400
    problem = err.value.response.json()
    assert field in {e["field"] for e in problem["errors"]}
    assert problem["instance"] == "/api/v2/customers/acme/entitlements"


def test_metered_entitlement_to_a_feature_without_a_meter_is_a_400(om):
    """Nothing would ever measure it (access would never end): refused naming featureKey."""
    customer(om)
    plain_feature(om, "sso")
    with pytest.raises(HttpResponseError) as err:
        metered(om, feature="sso", issue_after_reset=10)
    assert err.value.status_code == 400
    assert "featureKey" in {e["field"] for e in err.value.response.json()["errors"]}
    assert om.customer_entitlements_v2.list("acme").total_count == 0


def test_read_key_reads_values_but_cannot_create(live, om):
    customer(om)
    plain_feature(om, "sso")
    with live.client("read") as reader:
        with pytest.raises(HttpResponseError) as err:
            reader.customer_entitlements_v2.post(
                "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
            )
        assert err.value.status_code == 403
        om.customer_entitlements_v2.post(
            "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
        )
        assert reader.customer.get_customer_access("acme").entitlements["sso"].has_access


async def test_async_client_reads_the_v2_value(live: Live):
    """The v2 value endpoint, by feature key and by entitlement id, through the async client."""
    async with AsyncClient(endpoint=live.url, token=live.keys["admin"], retry_total=0) as client:
        await client.customers.create(
            CustomerCreate(
                key="acme",
                name="Acme",
                usage_attribution=CustomerUsageAttribution(subject_keys=["acme"]),
            )
        )
        await client.meters.create(
            {"slug": "tokens_total", "aggregation": "SUM", "eventType": "prompt",
             "valueProperty": "$.tokens"}
        )  # fmt: skip
        await client.features.create(
            FeatureCreateInputs(key="tokens", name="Tokens", meter_slug="tokens_total")
        )
        ent = await client.customer_entitlements_v2.post(
            "acme",
            EntitlementMeteredV2CreateInputs(
                type="metered", feature_key="tokens", issue_after_reset=50,
                usage_period=RecurringPeriodCreateInput(interval="P1D"),
            ),
        )  # fmt: skip
        await client.events.ingest_event(prompt("acme", 20, at=utcnow()))
        for ref in ("tokens", ent["id"]):
            got = await client.customer_entitlement_v2.get_customer_entitlement_value("acme", ref)
            assert (got.has_access, got.balance, got.usage) == (True, 30, 20)


# --- grants ------------------------------------------------------------------------------------


def grant(om: openmeter.Client, amount: float, feature: str = "tokens", **extra: Any) -> Any:
    inputs = {"effective_at": utcnow()} | extra
    return om.customer_entitlement_v2.create_customer_entitlement_grant(
        "acme", feature, EntitlementGrantCreateInputV2(amount=amount, **inputs)
    )


def test_a_grant_tops_up_an_exhausted_entitlement(om):
    """A hard limit reached; a grant of 5 gives access back, with 5 left to spend."""
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=10)
    use(om, 10)
    assert value(om).has_access is False

    created = grant(om, 5, expiration=ExpirationPeriod(duration="MONTH", count=1))
    assert (created.amount, created.priority, created.entitlement_id) == (5, 1, ent["id"])
    assert created.expires_at == _month_after(created.effective_at)
    assert (created.min_rollover_amount, created.max_rollover_amount) == (0, 5)

    topped = value(om)
    assert (topped.has_access, topped.balance, topped.usage) == (True, 5, 10)
    assert topped.total_available_grant_amount == 15
    use(om, 5)
    assert value(om).has_access is False


@pytest.mark.parametrize(
    ("duration", "count"),
    [("MONTH", 1), ("HOUR", 5), ("YEAR", 2), ("WEEK", 1), ("DAY", 7), ("HOUR", 48), ("MONTH", 12)],
)
def test_a_grant_reads_back_its_expiration(om, duration, count):
    """`expiration` is answered as sent (7 DAY stays 7 DAY), on create and in the list, as
    OpenMeter answers it."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    created = grant(om, 5, effective_at=datetime(2026, 1, 31, 12, tzinfo=UTC),
                    expiration=ExpirationPeriod(duration=duration, count=count))
    listed = om.customer_entitlement_v2.get_grants("acme", "tokens").items_property[0]
    for read in (created, listed):
        assert (read.expiration.duration, read.expiration.count) == (duration, count)
    assert grant(om, 1).expiration is None


def test_a_grant_made_natively_reads_its_expiry_in_the_largest_unit_that_gives_it(om, live):
    """No `expiration` was sent: it is worked out from the expiry (7 days reads as 1 WEEK)."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    effective = datetime(2026, 1, 31, 12, tzinfo=UTC)
    made = httpx.post(
        f"{live.url}/v1/customers/acme/entitlements/tokens/grants",
        headers={"Authorization": f"Bearer {live.keys['admin']}"},
        json={"amount": 5, "effective_at": effective.isoformat(),
              "expires_at": (effective + timedelta(days=7)).isoformat()},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    listed = om.customer_entitlement_v2.get_grants("acme", "tokens").items_property[0]
    assert (listed.expiration.duration, listed.expiration.count) == ("WEEK", 1)


def _month_after(at: datetime) -> datetime:
    """The same wall time a calendar month later, on the month's last day if it is shorter."""
    year, month = at.year + at.month // 12, at.month % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))


def test_grants_are_listed_by_feature_key_or_entitlement_id(om):
    customer(om)
    tokens_feature(om)
    ent = metered(om, is_soft_limit=True)
    first = grant(om, 3, priority=2, metadata={"order": "A-1"}, max_rollover_amount=1)
    second = grant(om, 7, min_rollover_amount=2)
    for ref in ("tokens", ent["id"]):
        listed = om.customer_entitlement_v2.get_grants("acme", ref)
        assert listed.total_count == 2
        assert [(g.amount, g.priority) for g in listed.items_property] == [(3, 2), (7, 1)]
    got = om.customer_entitlement_v2.get_grants("acme", "tokens").items_property[0]
    assert (got.id, got.metadata, got.max_rollover_amount) == (first.id, {"order": "A-1"}, 1)
    assert got.expires_at is None
    assert value(om).total_available_grant_amount == 10
    use(om, 4)  # the higher priority (lower number) burns first
    v2 = om.customer_entitlement_v2.get_customer_entitlement_value("acme", "tokens")
    assert v2.grant_balances == {second.id: 3, first.id: 3}


def test_a_customers_grants_are_paged_by_offset_and_limit_too(om):
    """The v2 grant list takes `offset`/`limit` as well as `page`/`pageSize`, as its spec says."""
    customer(om)
    tokens_feature(om)
    metered(om, is_soft_limit=True)
    made = [grant(om, n).id for n in (1, 2, 3)]
    by_offset = om.customer_entitlement_v2.get_grants("acme", "tokens", offset=1, limit=1)
    assert ([g.id for g in by_offset.items_property], by_offset.total_count) == ([made[1]], 3)
    by_page = om.customer_entitlement_v2.get_grants("acme", "tokens", page=2, page_size=2)
    assert ([g.id for g in by_page.items_property], by_page.page) == ([made[2]], 2)


def test_an_expired_grant_adds_nothing(om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=4)
    grant(om, 100, effective_at=utcnow() - timedelta(hours=3),
          expiration=ExpirationPeriod(duration="HOUR", count=1))  # fmt: skip
    assert value(om).total_available_grant_amount == 4


def test_a_recurring_grant_holds_its_whole_amount_again_at_each_step(om):
    """Daily 5 from 30 hours ago: the instance live now began 6 hours ago and holds 5."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=0)
    began = (utcnow() - timedelta(hours=30)).replace(second=0, microsecond=0)
    created = grant(om, 5, effective_at=began, recurrence=RecurringPeriodCreateInput(interval="DAY"))
    assert (created.recurrence.interval, created.recurrence.anchor) == ("DAY", began)
    assert created.next_recurrence == began + timedelta(days=2)
    assert value(om).total_available_grant_amount == 5
    use(om, 3)
    got = value(om)
    assert (got.has_access, got.balance, got.usage) == (True, 2, 3)
    listed = om.customer_entitlement_v2.get_grants("acme", "tokens").items_property[0]
    assert (listed.id, listed.recurrence.interval_iso) == (created.id, timedelta(days=1))


def test_grants_sent_with_the_entitlement_are_created(om):
    customer(om)
    tokens_feature(om)
    metered(
        om, issue_after_reset=1,
        grants=[EntitlementGrantCreateInputV2(amount=9, effective_at=utcnow())],
    )  # fmt: skip
    assert value(om).total_available_grant_amount == 10
    assert om.customer_entitlement_v2.get_grants("acme", "tokens").total_count == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": 5, "expiration": {"duration": "MINUTE", "count": 1}}, "expiration.duration"),
        ({"amount": 5, "expiration": {"duration": "DAY", "count": 0}}, "expiration.count"),
        ({"amount": 5, "recurrence": {"interval": "PT1H"}}, "recurrence.interval"),
        ({"amount": 5, "minRolloverAmount": 3, "maxRolloverAmount": 2}, "maxRolloverAmount"),
        ({"amount": 5, "priority": 0}, "priority"),
        ({"amount": 5, "effectiveAt": "yesterday"}, "effectiveAt"),
    ],
)
def test_bad_grant_is_a_400_naming_the_field(om, body, field):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=1)
    with pytest.raises(HttpResponseError) as err:
        om.customer_entitlement_v2.create_customer_entitlement_grant(
            "acme", "tokens", {"effectiveAt": utcnow().isoformat()} | body
        )
    assert err.value.status_code == 400
    assert field in {e["field"] for e in err.value.response.json()["errors"]}


def test_grants_need_a_metered_entitlement(om):
    customer(om)
    plain_feature(om, "sso")
    om.customer_entitlements_v2.post(
        "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
    )
    with pytest.raises(HttpResponseError) as err:
        grant(om, 5, feature="sso")
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        grant(om, 5, feature="tokens")
