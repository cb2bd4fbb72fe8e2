"""OpenMeter's entitlement reset (`POST .../entitlements/{e}/reset`), driven by the SDK.

The same live server as the other SDK tests, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from openmeter.models import EntitlementBooleanCreateInputs, ResetEntitlementUsageInput
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


def reset(om: openmeter.Client, ref: str = "tokens", customer_key: str = "acme", **body: Any) -> None:
    om.customer_entitlement_v2.reset_customer_entitlement(customer_key, ref, ResetEntitlementUsageInput(**body))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_reset_zeroes_the_usage_and_keeps_the_entitlement(om):
    """After a reset the value starts again from the included units, under the same id: reads
    by that id and lists show one live entitlement, not a deleted one."""
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=100)
    use(om, 30)
    assert value(om).usage == 30

    reset(om, ent["id"])
    got = om.customer_entitlement_v2.get_customer_entitlement_value("acme", ent["id"])
    assert (got.usage, got.balance, got.has_access) == (0, 100, True)
    read = om.customer_entitlements_v2.get("acme", ent["id"])
    assert read["id"] == ent["id"] and "deletedAt" not in read
    listed = om.customer_entitlements_v2.list("acme", include_deleted=True).items_property
    assert [(e["id"], "deletedAt" in e) for e in listed] == [(ent["id"], False)]


def test_reset_keeps_the_entitlements_creation_time(om):
    """The entitlement a vendor created is the same one after a reset: its createdAt does not
    move to the reset; updatedAt does."""
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=10)
    reset(om, ent["id"])
    read = om.customer_entitlements_v2.get("acme", ent["id"])
    assert _at(read["createdAt"]) == _at(ent["createdAt"])
    assert _at(read["updatedAt"]) > _at(ent["createdAt"])


def test_events_after_a_reset_count_in_the_new_period(om):
    """Usage reported after the reset counts against the fresh balance."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    use(om, 10)
    assert value(om).has_access is False
    reset(om)
    use(om, 4)
    got = value(om)
    assert (got.usage, got.balance, got.has_access) == (4, 6, True)


def test_reset_moves_the_period_anchor_to_the_reset(om):
    """By default the usage period is aligned on the reset from then on."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    before = utcnow()
    reset(om)
    read = om.customer_entitlements_v2.get("acme", "tokens")
    anchor = _at(read["usagePeriod"]["anchor"])
    assert before <= anchor <= utcnow()
    period = read["currentUsagePeriod"]
    assert _at(period["from"]) == anchor == _at(read["lastReset"])
    assert _at(period["to"]) - anchor >= timedelta(days=28)


def test_reset_with_retain_anchor_ends_at_the_next_regular_boundary(om):
    """With `retainAnchor` the anchor stays: the new period runs from the reset to the end of
    the period it interrupted."""
    customer(om)
    tokens_feature(om)
    anchor = utcnow() - timedelta(days=10)
    ent = metered(om, issue_after_reset=10, usage_period={"interval": "MONTH", "anchor": anchor})
    regular_end = _at(ent["currentUsagePeriod"]["to"])
    use(om, 3)
    before = utcnow()
    reset(om, retain_anchor=True)
    read = om.customer_entitlements_v2.get("acme", "tokens")
    assert _at(read["usagePeriod"]["anchor"]) == _at(ent["usagePeriod"]["anchor"])
    assert _at(read["currentUsagePeriod"]["to"]) == regular_end
    assert before <= _at(read["currentUsagePeriod"]["from"]) == _at(read["lastReset"]) <= utcnow()
    assert value(om).usage == 0


def test_reset_preserves_overage_only_when_asked(om):
    """`preserveOverage` carries the ended period's overage into the new one, lowering its
    balance (not counted as its usage); otherwise the entitlement's own setting (forgive)."""
    for key in ("acme", "beta"):
        customer(om, key)
    tokens_feature(om)
    for key in ("acme", "beta"):
        metered(om, customer_key=key, issue_after_reset=10, is_soft_limit=True)
        use(om, 14, subject=key)
    reset(om, preserve_overage=True)
    reset(om, customer_key="beta")
    kept = value(om)
    assert (kept.usage, kept.balance, kept.overage) == (0, 6, 0)
    forgiven = value(om, customer_key="beta")
    assert (forgiven.usage, forgiven.balance, forgiven.overage) == (0, 10, 0)


def test_preserve_overage_false_forgives_despite_the_entitlement_setting(om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10, is_soft_limit=True, preserve_overage_at_reset=True)
    use(om, 13)
    reset(om, preserve_overage=False)
    assert value(om).balance == 10


def test_reset_rolls_a_grant_over_by_its_bounds(om):
    """A grant keeps what it has left, at most its maxRolloverAmount, as at a period end."""
    customer(om)
    tokens_feature(om)
    metered(om)
    grant(om, 20, max_rollover_amount=5, min_rollover_amount=0)
    use(om, 12)
    assert value(om).balance == 8
    reset(om)
    got = value(om)
    assert (got.usage, got.balance) == (0, 5)


def test_reset_of_an_entitlement_without_usage_period_is_a_400(om):
    """Only metered entitlements can be reset."""
    customer(om)
    plain_feature(om, "sso")
    om.customer_entitlements_v2.post("acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso"))
    with pytest.raises(HttpResponseError) as err:
        reset(om, "sso")
    assert err.value.status_code == 400
    assert "entitlementIdOrFeatureKey" in {e["field"] for e in err.value.response.json()["errors"]}


@pytest.mark.parametrize("shift", [timedelta(hours=1), -timedelta(hours=1)])
def test_reset_effective_other_than_now_is_a_400_naming_effective_at(om, shift):
    """A future reset, or one in the past (it would rewrite periods already counted)."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    use(om, 3)
    with pytest.raises(HttpResponseError) as err:
        reset(om, effective_at=utcnow() + shift)
    assert err.value.status_code == 400
    assert "effectiveAt" in {e["field"] for e in err.value.response.json()["errors"]}
    assert value(om).usage == 3


def test_reset_effective_now_by_the_clients_clock_is_accepted(om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    use(om, 3)
    reset(om, effective_at=utcnow())
    assert value(om).usage == 0


def test_reset_of_an_unknown_or_deleted_entitlement_is_not_found(om):
    customer(om)
    tokens_feature(om)
    ent = metered(om, issue_after_reset=10)
    with pytest.raises(ResourceNotFoundError):
        reset(om, customer_key="nobody")
    with pytest.raises(ResourceNotFoundError):
        reset(om, "sso")
    om.customer_entitlements_v2.delete("acme", ent["id"])
    for ref in ("tokens", ent["id"]):
        with pytest.raises(ResourceNotFoundError):
            reset(om, ref)


def test_reset_of_an_entitlement_from_a_subscription_is_a_conflict(om, live: Live):
    """It resets with the subscription's periods."""
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
    use(om, 5)
    with pytest.raises(ResourceExistsError) as err:
        reset(om)
    assert "subscription" in err.value.response.json()["detail"]
    assert value(om).usage == 5


def test_read_key_cannot_reset(live: Live, om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    with live.client("read") as reader, pytest.raises(HttpResponseError) as err:
        reset(reader)
    assert err.value.status_code == 403
