"""OpenMeter's tenant-wide entitlement and grant routes, driven by the official SDK: lists
across customers, an entitlement by id, and voiding a grant. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter.models import EntitlementBooleanCreateInputs, EntitlementGrantCreateInputV2
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import (
    customer,
    metered,
    plain_feature,
    tokens_feature,
    value,
)
from tests.api.test_openmeter_sdk import Live
from tests.conftest import run_blocking

from allotment.types import utcnow

live, om = sdk.live, sdk.om


def _two_customers(om: openmeter.Client) -> dict[str, Any]:
    """acme: metered tokens and boolean sso; globex: metered tokens. By (customer, feature)."""
    acme, globex = customer(om, "acme"), customer(om, "globex")
    tokens_feature(om)
    plain_feature(om, "sso")
    out = {
        ("acme", "tokens"): metered(om, "acme", issue_after_reset=10),
        ("globex", "tokens"): metered(om, "globex", issue_after_reset=20),
        ("acme", "sso"): om.customer_entitlements_v2.post(
            "acme", EntitlementBooleanCreateInputs(type="boolean", feature_key="sso")
        ),
    }
    out["ids"] = {"acme": acme.id, "globex": globex.id}
    return out


def grant(om: openmeter.Client, customer_key: str, amount: float) -> Any:
    return om.customer_entitlement_v2.create_customer_entitlement_grant(
        customer_key, "tokens", EntitlementGrantCreateInputV2(amount=amount, effective_at=utcnow())
    )


# --- entitlements ------------------------------------------------------------------------------


def test_v2_entitlements_are_listed_across_customers_and_filtered(om):
    """Oldest first, as a page; filters by customer key or id, feature and type."""
    made = _two_customers(om)
    listed = om.entitlements_v2.list()
    assert (listed.total_count, listed.page, listed.page_size) == (3, 1, 100)
    assert [(e["customerKey"], e["featureKey"], e["type"]) for e in listed.items_property] == [
        ("acme", "tokens", "metered"), ("globex", "tokens", "metered"), ("acme", "sso", "boolean"),
    ]  # fmt: skip
    assert listed.items_property[0]["id"] == made[("acme", "tokens")]["id"]

    def keys(**filters: Any) -> list[tuple[str, str]]:
        return [(e["customerKey"], e["featureKey"]) for e in om.entitlements_v2.list(**filters).items_property]

    assert keys(customer_keys=["globex"]) == [("globex", "tokens")]
    assert keys(customer_ids=[made["ids"]["acme"]]) == [("acme", "tokens"), ("acme", "sso")]
    assert keys(feature=["sso"]) == [("acme", "sso")]
    assert keys(entitlement_type=["metered"], order="DESC") == [("globex", "tokens"), ("acme", "tokens")]
    second = om.entitlements_v2.list(page=2, page_size=2)
    assert (second.total_count, second.page, [e["featureKey"] for e in second.items_property]) == (3, 2, ["sso"])


def test_unknown_names_in_entitlement_filters_match_nothing(om):
    _two_customers(om)
    assert om.entitlements_v2.list(customer_keys=["nobody"]).total_count == 0
    assert om.entitlements_v2.list(feature=["nope"]).total_count == 0
    assert om.entitlements.list(subject=["stranger"]) == []


def test_v1_entitlement_list_is_an_array_held_by_subjects_unless_paged(om):
    """Without `page` the v1 list is a bare array (offset/limit); each item names a subject.
    (The SDK hands these union-typed results back as plain JSON.)"""
    _two_customers(om)
    listed = om.entitlements.list()
    assert [(e["subjectKey"], e["featureKey"]) for e in listed] == [
        ("acme", "tokens"), ("globex", "tokens"), ("acme", "sso"),
    ]  # fmt: skip
    assert "customerId" not in listed[0]
    assert [e["featureKey"] for e in om.entitlements.list(offset=1, limit=1)] == ["tokens"]
    assert [e["subjectKey"] for e in om.entitlements.list(subject=["globex"])] == ["globex"]
    paged = om.entitlements.list(page=1, page_size=2)
    assert (paged["totalCount"], len(paged["items"])) == (3, 2)


def test_an_entitlement_is_read_by_id_even_once_deleted(om):
    made = _two_customers(om)
    ent_id = made[("acme", "tokens")]["id"]
    got = om.entitlements_v2.get(ent_id)
    assert (got["customerKey"], got["featureKey"], got["issueAfterReset"]) == ("acme", "tokens", 10)
    assert om.entitlements.get(ent_id)["subjectKey"] == "acme"

    om.customer_entitlements_v2.delete("acme", "tokens")
    assert om.entitlements_v2.get(ent_id)["deletedAt"] is not None
    assert [e["featureKey"] for e in om.entitlements_v2.list(customer_keys=["acme"]).items_property] == ["sso"]
    with pytest.raises(ResourceNotFoundError):
        om.entitlements_v2.get("ent_unknown")


def test_entitlement_lists_are_per_tenant(live: Live, om, settings):
    """Another tenant's key sees none of them, and reading one by id is a 404."""
    made = _two_customers(om)
    other_tenant = Live(live.url, run_blocking(sdk._tenant_keys(settings)))
    with other_tenant.client() as other:
        assert other.entitlements_v2.list().total_count == 0
        with pytest.raises(ResourceNotFoundError):
            other.entitlements_v2.get(made[("acme", "tokens")]["id"])


# --- grants ------------------------------------------------------------------------------------


def test_grants_are_listed_across_customers_on_their_entitlement(om):
    """v2 answers a page, v1 a bare array; each grant names the metered entitlement it tops up."""
    made = _two_customers(om)
    first, second = grant(om, "acme", 5), grant(om, "globex", 7)
    listed = om.grants_v2.list()
    assert listed.total_count == 2
    assert [(g.id, g.amount, g.entitlement_id) for g in listed.items_property] == [
        (first.id, 5, made[("acme", "tokens")]["id"]), (second.id, 7, made[("globex", "tokens")]["id"]),
    ]  # fmt: skip
    assert [g.id for g in om.grants_v2.list(customer=["globex"]).items_property] == [second.id]
    assert [g.id for g in om.grants_v2.list(customer=[made["ids"]["acme"]]).items_property] == [first.id]
    assert om.grants_v2.list(feature=["sso"]).total_count == 0
    assert [g.id for g in om.grants_v2.list(order="DESC", order_by="createdAt").items_property] == [
        second.id, first.id,
    ]  # fmt: skip
    v1 = om.grants.list(subject=["acme"])
    assert [(g["id"], g["amount"]) for g in v1] == [(first.id, 5)]
    assert om.grants.list(page=1, page_size=1)["totalCount"] == 2


def test_deleting_a_grant_voids_it_and_lists_show_it_voided(om):
    """The grant stops adding to the balance; lists still show it, with `voidedAt`, as
    OpenMeter's do (a voided grant is not a deleted one)."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    topup = grant(om, "acme", 5)
    assert value(om).total_available_grant_amount == 15

    assert om.grants.delete(topup.id) is None
    assert value(om).total_available_grant_amount == 10
    for listed in (
        om.grants_v2.list().items_property,
        om.customer_entitlement_v2.get_grants("acme", "tokens").items_property,
    ):
        assert [g.id for g in listed] == [topup.id] and listed[0].voided_at is not None
    assert [g["id"] for g in om.grants.list()] == [topup.id]
    with pytest.raises(ResourceNotFoundError):
        om.grants.delete("grt_unknown")


def test_voiding_a_grant_twice_is_a_400(om):
    """As in OpenMeter ("grant already voided", a validation error); the first void stands."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    topup = grant(om, "acme", 5)
    om.grants.delete(topup.id)
    voided_at = om.grants_v2.list().items_property[0].voided_at
    with pytest.raises(HttpResponseError) as err:
        om.grants.delete(topup.id)
    assert err.value.status_code == 400 and "already voided" in err.value.response.json()["detail"]
    assert om.grants_v2.list().items_property[0].voided_at == voided_at


def test_a_grant_cannot_be_voided_at_another_time(om):
    """`at` a minute or more off now is a 400 naming it; the grant stays."""
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    topup = grant(om, "acme", 5)
    for at in (utcnow() + timedelta(hours=1), utcnow() - timedelta(days=1)):
        with pytest.raises(HttpResponseError) as err:
            om.grants.delete(topup.id, at=at)
        assert err.value.status_code == 400
        assert [e["field"] for e in err.value.response.json()["errors"]] == ["at"]
    om.grants.delete(topup.id, at=utcnow())
    assert om.grants_v2.list().items_property[0].voided_at is not None


def test_a_read_key_lists_grants_but_cannot_void_them(live: Live, om):
    customer(om)
    tokens_feature(om)
    metered(om, issue_after_reset=10)
    topup = grant(om, "acme", 5)
    with live.client("read") as reader:
        assert reader.grants_v2.list().total_count == 1
        with pytest.raises(HttpResponseError) as err:
            reader.grants.delete(topup.id)
        assert err.value.status_code == 403

