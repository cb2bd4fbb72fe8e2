"""OpenMeter's entitlement override (`PUT .../entitlements/{e}/override`), driven by the SDK.

The same live server as the other SDK tests, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from openmeter.models import (
    EntitlementBooleanCreateInputs,
    EntitlementGrantCreateInputV2,
    EntitlementMeteredV2CreateInputs,
    EntitlementStaticCreateInputs,
    RecurringPeriodCreateInput,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import (
    customer,
    grant,
    metered,
    plain_feature,
    tokens_feature,
    use,
    value,
)
from tests.api.test_openmeter_sdk import Live

from allotment.types import utcnow

live, om = sdk.live, sdk.om


def monthly(included: float, anchor: datetime | None = None, **extra: Any) -> EntitlementMeteredV2CreateInputs:
    period = RecurringPeriodCreateInput(interval="MONTH", anchor=anchor)
    return EntitlementMeteredV2CreateInputs(
        type="metered", feature_key="tokens", issue_after_reset=included, usage_period=period, **extra
    )


def override(om: openmeter.Client, body: Any, ref: str = "tokens", customer_key: str = "acme") -> Any:
    return om.customer_entitlements_v2.override(customer_key, ref, body)


def test_override_replaces_the_entitlement_and_keeps_the_period_usage(om):
    """An upgrade mid-period: the old entitlement is deleted, the new one (201, new id) has the
    new limit, and the usage of the period so far still counts against it."""
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=100)
    use(om, 30)
    anchor = datetime.fromisoformat(old["usagePeriod"]["anchor"])

    new = override(om, monthly(500, anchor))
    assert new["id"] != old["id"] and (new["featureKey"], new["issueAfterReset"]) == ("tokens", 500)
    got = value(om)
    assert (got.usage, got.balance, got.has_access) == (30, 470, True)
    listed = om.customer_entitlements_v2.list("acme", include_deleted=True).items_property
    assert {e["id"]: "deletedAt" in e for e in listed} == {old["id"]: True, new["id"]: False}
    assert om.customer_entitlements_v2.get("acme", "tokens")["id"] == new["id"]


def test_override_with_another_usage_period_counts_from_now(om):
    """A new period grid starts a new period now: the old period's usage is not in it."""
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=100)
    use(om, 30)
    daily = EntitlementMeteredV2CreateInputs(
        type="metered", feature_key="tokens", issue_after_reset=10,
        usage_period=RecurringPeriodCreateInput(interval="DAY"),
    )  # fmt: skip
    override(om, daily, ref=old["id"])
    got = value(om)
    assert (got.usage, got.balance) == (0, 10)
    use(om, 4)
    assert value(om).balance == 6


def test_override_keeps_the_customers_grants(om):
    """Grants belong to the customer and feature: they top up the new entitlement too, and
    grants sent with the override are added."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    grant(om, 5)
    extra = [EntitlementGrantCreateInputV2(amount=7, effective_at=utcnow())]
    override(om, monthly(20, grants=extra))
    assert value(om).total_available_grant_amount == 32
    assert om.customer_entitlement_v2.get_grants("acme", "tokens").total_count == 2


def test_override_may_change_the_kind(om):
    """A boolean entitlement becomes a static one with its config."""
    customer(om)
    plain_feature(om, "models")
    om.customer_entitlements_v2.post(
        "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="models")
    )
    new = override(
        om, EntitlementStaticCreateInputs(type="static", feature_key="models", config='{"n": 2}'),
        ref="models",
    )  # fmt: skip
    assert new["type"] == "static"
    assert value(om, "models").config == '{"n": 2}'


def test_a_failed_override_leaves_the_entitlement_as_it_was(om):
    """A grant refused after the replacement was made: nothing of the override is kept."""
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=10)
    use(om, 3)
    with pytest.raises(HttpResponseError) as err:
        override(om, monthly(50, grants=[{"amount": 0, "effectiveAt": utcnow().isoformat()}]))
    assert err.value.status_code == 400
    assert "grants[0].amount" in {e["field"] for e in err.value.response.json()["errors"]}
    assert om.customer_entitlements_v2.get("acme", "tokens")["id"] == old["id"]
    assert om.customer_entitlements_v2.list("acme", include_deleted=True).total_count == 1
    assert (value(om).usage, value(om).balance) == (3, 7)


def test_override_naming_another_feature_is_a_400_naming_feature_key(om):
    customer(om)
    tokens_feature(om)
    plain_feature(om, "sso")
    metered(om, issue_after_reset=10)
    with pytest.raises(HttpResponseError) as err:
        override(om, EntitlementBooleanCreateInputs(type="boolean", feature_key="sso"))
    assert err.value.status_code == 400
    assert "featureKey" in {e["field"] for e in err.value.response.json()["errors"]}
    assert value(om).balance == 10


def test_override_of_an_unknown_or_deleted_entitlement_is_not_found(om):
    customer(om)
    tokens_feature(om)
    old = metered(om, issue_after_reset=10)
    with pytest.raises(ResourceNotFoundError):
        override(om, monthly(5), customer_key="nobody")
    with pytest.raises(ResourceNotFoundError):
        override(om, monthly(5), ref="sso")
    om.customer_entitlements_v2.delete("acme", "tokens")
    for ref in ("tokens", old["id"]):
        with pytest.raises(ResourceNotFoundError):
            override(om, monthly(5), ref=ref)


def test_override_of_an_entitlement_from_a_subscription_is_a_conflict(om, live: Live):
    """It follows the subscription: change that (or override it natively) instead."""
    customer(om)
    tokens_feature(om)
    auth = {"Authorization": f"Bearer {live.keys['admin']}"}
    with httpx.Client(base_url=live.url, headers=auth, timeout=30) as native:
        for path, body in [
            ("/v1/plans", {"key": "pro", "name": "Pro", "entitlements": [
                {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 100}]}),
            ("/v1/plans/pro/publish", None),
            ("/v1/subscriptions", {"customer": "acme", "plan": "pro"}),
        ]:  # fmt: skip
            assert native.post(path, json=body).status_code in (200, 201)
    with pytest.raises(ResourceExistsError) as err:
        override(om, monthly(500))
    assert "subscription" in err.value.model.detail
    assert value(om).total_available_grant_amount == 100


def test_read_key_cannot_override(live: Live, om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    with live.client("read") as reader, pytest.raises(HttpResponseError) as err:
        override(reader, monthly(50))
    assert err.value.status_code == 403
