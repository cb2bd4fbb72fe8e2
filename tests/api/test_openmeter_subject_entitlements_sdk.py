"""OpenMeter's v1 subject entitlements, driven by the official SDK's own subject operations.

A subject stands for the customer owning it: what is created, read and spent through any of a
customer's subjects is that customer's, with the same numbers as the customer routes. The same
live server as the other SDK tests (uvicorn in a thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import ast
import json
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import openmeter
import pytest
from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from openmeter._generated.operations import _operations as generated
from openmeter.models import (
    EntitlementBooleanCreateInputs,
    EntitlementGrantCreateInput,
    EntitlementMeteredCreateInputs,
    EntitlementStaticCreateInputs,
    ExpirationPeriod,
    RecurringPeriodCreateInput,
    ResetEntitlementUsageInput,
)
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_entitlements_sdk import customer, plain_feature, tokens_feature, use
from tests.api.test_openmeter_sdk import prompt

from allotment.types import utcnow

live, om = sdk.live, sdk.om  # the live server and an admin client, as fixtures here too


@cache
def _subject_operations() -> type:
    """The SDK's subject entitlement operations, as it generated them.

    Its generated module defines two classes named `SubjectsOperations` (these first, then the
    subjects list) and two request builders of each name, so the later ones shadow these and
    `client.subjects` only lists, reads, upserts and deletes subjects. The first definitions are
    compiled again here from the SDK's own source, in its module's namespace."""
    tree = ast.parse(Path(generated.__file__).read_text(encoding="utf-8"))
    first: dict[str, ast.stmt] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.ClassDef | ast.FunctionDef)
            and node.name not in first
            and (node.name == "SubjectsOperations" or node.name.startswith("build_subjects_"))
        ):
            first[node.name] = node
    namespace = dict(vars(generated))
    code = compile(
        ast.Module(body=list(first.values()), type_ignores=[]), generated.__file__, "exec"
    )
    exec(code, namespace)  # noqa: S102 - the SDK's own generated code
    return namespace["SubjectsOperations"]  # type: ignore[no-any-return]


@pytest.fixture
def subj(om: openmeter.Client) -> Any:
    return _subject_operations()(om._client, om._config, om._serialize, om._deserialize)


def metered(subj: Any, subject: str = "acme", feature: str = "tokens", **extra: Any) -> Any:
    inputs = {"usage_period": RecurringPeriodCreateInput(interval="MONTH")} | extra
    return subj.post(
        subject, EntitlementMeteredCreateInputs(type="metered", feature_key=feature, **inputs)
    )


def boolean(subj: Any, subject: str, feature: str) -> Any:
    return subj.post(subject, EntitlementBooleanCreateInputs(type="boolean", feature_key=feature))


def numbers(value: Any) -> tuple[Any, ...]:
    return value.has_access, value.balance, value.usage, value.overage


# --- metered entitlements ----------------------------------------------------------------------


def test_a_subjects_entitlement_is_spent_by_every_subject_of_its_customer(om, subj):
    """Created through one subject of a customer; events of either subject burn its balance,
    and each subject and the customer read the same value; at the limit access stops."""
    customer(om, "acme", "acme-web", "acme-api")
    tokens_feature(om)
    created = metered(subj, "acme-api", issue_after_reset=100)
    assert (created["type"], created["featureKey"], created["subjectKey"]) == (
        "metered", "tokens", "acme-api",
    )  # fmt: skip
    assert "customerKey" not in created and created["issueAfterReset"] == 100
    assert created["isSoftLimit"] is False and created["usagePeriod"]["interval"] == "MONTH"

    use(om, 30, "acme-web")
    use(om, 30, "acme-api")
    for subject in ("acme-api", "acme-web"):
        assert numbers(subj.get_entitlement_value(subject, "tokens")) == (True, 40, 60, 0)
    by_customer = om.customer_entitlement.get_customer_entitlement_value("acme", "tokens")
    assert numbers(by_customer) == (True, 40, 60, 0)

    use(om, 40, "acme-web")
    assert numbers(subj.get_entitlement_value("acme-api", created["id"])) == (False, 0, 100, 0)


def test_a_soft_limit_keeps_access_and_reports_overage(om, subj):
    customer(om)
    tokens_feature(om)
    metered(subj, issue_after_reset=10, is_soft_limit=True)
    use(om, 25)
    over = subj.get_entitlement_value("acme", "tokens")
    assert numbers(over) == (True, 0, 25, 15) and over.total_available_grant_amount == 10


def test_the_value_at_a_past_instant_counts_only_the_usage_before_it(om, subj):
    customer(om)
    tokens_feature(om)
    now = utcnow()
    created = metered(subj, issue_after_reset=100, measure_usage_from=now - timedelta(hours=5))
    assert created["measureUsageFrom"].startswith(str((now - timedelta(hours=5)).date()))
    om.events.ingest_event(prompt("acme", 10, at=now - timedelta(hours=4)))
    om.events.ingest_event(prompt("acme", 20, at=now - timedelta(hours=2)))
    then = subj.get_entitlement_value("acme", "tokens", time=now - timedelta(hours=3))
    assert (then.usage, then.balance) == (10, 90)
    assert subj.get_entitlement_value("acme", "tokens").usage == 30


def test_boolean_and_static_entitlements_of_a_subject(om, subj):
    customer(om)
    plain_feature(om, "sso")
    plain_feature(om, "models")
    assert boolean(subj, "acme", "sso")["subjectKey"] == "acme"
    config = {"models": ["gpt-4"], "max": 3}
    static = subj.post(
        "acme",
        EntitlementStaticCreateInputs(
            type="static", feature_key="models", config=json.dumps(config)
        ),
    )
    assert static["type"] == "static" and json.loads(static["config"]) == config
    assert subj.get_entitlement_value("acme", "sso").has_access is True
    got = subj.get_entitlement_value("acme", "models")
    assert got.has_access is True and json.loads(got.config) == config


# --- grants ------------------------------------------------------------------------------------


def grant(subj: Any, ref: str, amount: float, **extra: Any) -> Any:
    return subj.create_grant(
        "acme", ref, EntitlementGrantCreateInput(
            amount=amount, effective_at=utcnow(),
            expiration=ExpirationPeriod(duration="MONTH", count=1), **extra,
        ),
    )  # fmt: skip


def test_a_v1_grant_keeps_nothing_across_a_reset_unless_asked(om, subj):
    """As in OpenMeter's v1, `maxRolloverAmount` left out is 0: the grant's remainder is gone
    at the next reset; a grant that names its rollover keeps up to it."""
    customer(om)
    tokens_feature(om)
    ent = metered(
        subj, issue_after_reset=10, usage_period=RecurringPeriodCreateInput(interval="DAY")
    )
    dropped = grant(subj, "tokens", 50)
    kept = grant(subj, ent["id"], 20, max_rollover_amount=20)
    assert (dropped.amount, dropped.max_rollover_amount, dropped.entitlement_id) == (
        50,
        0,
        ent["id"],
    )
    assert kept.max_rollover_amount == 20 and kept.expires_at is not None

    assert subj.get_entitlement_value("acme", "tokens").balance == 80
    tomorrow = subj.get_entitlement_value("acme", "tokens", time=utcnow() + timedelta(days=1))
    assert tomorrow.balance == 30  # the day's 10, and the 20 rolled over


def test_grants_are_listed_a_voided_one_with_its_voided_at(om, subj):
    customer(om)
    tokens_feature(om)
    ent = metered(subj, issue_after_reset=1)
    first = grant(subj, "tokens", 3, priority=2, metadata={"order": "A-1"})
    second = grant(subj, "tokens", 7)
    listed = subj.get_grants("acme", "tokens", order_by="createdAt")
    assert [(g.id, g.entitlement_id) for g in listed] == [
        (first.id, ent["id"]),
        (second.id, ent["id"]),
    ]
    assert listed[0].metadata == {"order": "A-1"} and listed[0].priority == 2

    om.grants.delete(first.id)
    voided = {g.id: g.voided_at for g in subj.get_grants("acme", ent["id"])}
    assert voided[first.id] is not None and voided[second.id] is None
    assert subj.get_entitlement_value("acme", "tokens").balance == 8


# --- list, get, delete -------------------------------------------------------------------------


def test_list_get_and_delete_a_subjects_entitlements(om, subj):
    """The subject's customer's entitlements, the same ones the customer routes show."""
    customer(om, "acme", "acme-web")
    tokens_feature(om)
    plain_feature(om, "sso")
    ent = metered(subj, "acme-web", issue_after_reset=5)
    boolean(subj, "acme-web", "sso")

    listed = subj.list("acme-web")
    assert [(e["featureKey"], e["subjectKey"]) for e in listed] == [
        ("tokens", "acme-web"),
        ("sso", "acme-web"),
    ]
    by_customer = om.customer_entitlements_v2.list("acme").items_property
    assert [e["id"] for e in by_customer] == [e["id"] for e in listed]
    assert subj.get("acme-web", ent["id"])["featureKey"] == "tokens"

    subj.delete("acme-web", ent["id"])
    assert [e["featureKey"] for e in subj.list("acme-web")] == ["sso"]
    everything = subj.list("acme-web", include_deleted=True)
    assert {e["featureKey"]: "deletedAt" in e for e in everything} == {"tokens": True, "sso": False}
    # Read by id after its end, as OpenMeter does.
    assert "deletedAt" in subj.get("acme-web", ent["id"])
    with pytest.raises(ResourceNotFoundError):
        subj.get_entitlement_value("acme-web", "tokens")
    with pytest.raises(ResourceNotFoundError):
        subj.delete("acme-web", ent["id"])


def test_a_second_entitlement_of_a_customer_to_a_feature_is_resource_exists(om, subj):
    """Through another subject of the same customer too: the entitlement is the customer's."""
    customer(om, "acme", "acme-web", "acme-api")
    plain_feature(om, "sso")
    boolean(subj, "acme-web", "sso")
    with pytest.raises(ResourceExistsError):
        boolean(subj, "acme-api", "sso")


def test_a_subject_without_a_customer_or_an_unknown_entitlement_is_not_found(om, subj):
    """A subject no customer owns has no entitlements (none are made for it); another
    customer's entitlement is not reachable through this subject."""
    om.subjects.upsert([{"key": "loner"}])
    customer(om, "acme")
    customer(om, "globex")
    plain_feature(om, "sso")
    with pytest.raises(ResourceNotFoundError) as err:
        subj.list("loner")
    assert "subject 'loner' belongs to no customer" in err.value.response.json()["detail"]
    with pytest.raises(ResourceNotFoundError):
        subj.get_entitlement_value("nobody", "sso")
    with pytest.raises(HttpResponseError) as caught:  # the SDK lists no 404 for a create
        boolean(subj, "loner", "sso")
    assert caught.value.status_code == 404
    assert om.customers.list(page=1, page_size=10).total_count == 2

    theirs = boolean(subj, "globex", "sso")
    for ref in (theirs["id"], "ent_unknown"):
        with pytest.raises(ResourceNotFoundError):
            subj.get("acme", ref)
    with pytest.raises(ResourceNotFoundError):
        subj.get_entitlement_value("acme", "sso")


def test_a_subject_is_named_by_its_key_even_with_a_slash_or_by_its_id(om, subj):
    """`team/a` travels as `team%2Fa`; the subject routes themselves still answer for it."""
    customer(om, "team", "team/a")
    subject = om.subjects.upsert([{"key": "team/a", "displayName": "Team A"}])[0]
    plain_feature(om, "sso")
    created = boolean(subj, "team/a", "sso")
    assert created["subjectKey"] == "team/a"
    assert [(e["id"], e["subjectKey"]) for e in subj.list(subject.id)] == [
        (created["id"], "team/a")
    ]
    assert subj.get_entitlement_value("team/a", "sso").has_access is True
    assert subj.get("team/a", created["id"])["featureKey"] == "sso"

    assert om.subjects.get("team/a").display_name == "Team A"
    om.subjects.delete("team/a")
    assert om.subjects.list() == []
    subj.delete("team/a", created["id"])  # the customer still owns the subject key
    assert subj.list("team/a") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "metered", "featureKey": "tokens"}, "usagePeriod"),
        ({"type": "static", "featureKey": "tokens", "config": "[1]"}, "config"),
        ({"type": "boolean"}, "featureKey"),
    ],
)
def test_a_bad_entitlement_is_a_400_naming_the_field(om, subj, body, field):
    customer(om, "team", "team/a")
    tokens_feature(om)
    with pytest.raises(HttpResponseError) as err:
        subj.post("team/a", body)
    assert err.value.status_code == 400
    problem = err.value.response.json()
    assert field in {e["field"] for e in problem["errors"]}
    assert problem["instance"] == "/api/v1/subjects/team/a/entitlements"


def test_a_read_key_reads_a_subjects_entitlements_but_cannot_create_them(live, om, subj):
    customer(om)
    plain_feature(om, "sso")
    boolean(subj, "acme", "sso")
    with live.client("read") as reader:
        ops = _subject_operations()(
            reader._client, reader._config, reader._serialize, reader._deserialize
        )
        assert [e["featureKey"] for e in ops.list("acme")] == ["sso"]
        with pytest.raises(HttpResponseError) as err:
            boolean(ops, "acme", "sso")
    assert err.value.status_code == 403


def test_a_subjects_entitlement_is_overridden_and_its_history_read_through_the_subject(om, subj):
    """Override replaces the owner's entitlement (the same one the customer routes see), and
    the history through a subject is the customer route's."""
    customer(om, "acme", "acme-web")
    tokens_feature(om)
    first = metered(subj, "acme-web", issue_after_reset=100)
    use(om, 30, "acme-web")
    replaced = subj.override(
        "acme-web", "tokens",
        EntitlementMeteredCreateInputs(type="metered", feature_key="tokens", issue_after_reset=500,
                                       usage_period=RecurringPeriodCreateInput(interval="MONTH")),
    )
    assert replaced["id"] != first["id"] and replaced["subjectKey"] == "acme-web"
    assert subj.get_entitlement_value("acme-web", "tokens").balance == \
        om.customer_entitlement.get_customer_entitlement_value("acme", "tokens").balance
    assert om.customer_entitlement.get_customer_entitlement_value("acme", "tokens").total_available_grant_amount == 500
    use(om, 20, "acme-web")
    now = utcnow()  # both read up to the same instant
    through_subject = subj.get_entitlement_history("acme-web", replaced["id"], window_size="DAY", to=now)
    by_customer = om.customer_entitlement_v2.get_customer_entitlement_history("acme", replaced["id"],
                                                                              window_size="DAY", to=now)
    assert through_subject.as_dict() == by_customer.as_dict()
    assert sum(w.usage for w in through_subject.windowed_history) >= 20
    with pytest.raises(ResourceNotFoundError):
        subj.get_entitlement_history("nobody", replaced["id"], window_size="DAY")


def test_a_subjects_entitlement_is_reset_through_the_subject_and_keeps_its_id(om, subj):
    """Usage starts again from zero; the entitlement is read, listed and granted under its id."""
    customer(om, "acme", "acme-web")
    tokens_feature(om)
    created = metered(subj, "acme-web", issue_after_reset=100)
    use(om, 30, "acme-web")
    subj.reset("acme-web", created["id"], ResetEntitlementUsageInput())
    assert numbers(subj.get_entitlement_value("acme-web", created["id"])) == (True, 100, 0, 0)
    use(om, 5, "acme-web")
    assert numbers(subj.get_entitlement_value("acme-web", "tokens")) == (True, 95, 5, 0)
    assert [e["id"] for e in subj.list("acme-web", include_deleted=True)] == [created["id"]]
    grant = subj.create_grant("acme-web", "tokens", EntitlementGrantCreateInput(
        amount=10, effective_at=utcnow(), expiration=ExpirationPeriod(duration="DAY", count=1)))
    assert grant.entitlement_id == created["id"]
