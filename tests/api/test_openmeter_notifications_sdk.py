"""OpenMeter notification channels, rules and events, driven by the official SDK.

The same live server as the other SDK tests, with its delivery loop running, posting to a real
receiver on loopback; signatures are checked with `standardwebhooks`. SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openmeter
import orjson
import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter.models import (
    NotificationChannelWebhookCreateRequest,
    NotificationEventResendRequest,
    NotificationRuleBalanceThresholdCreateRequest,
    NotificationRuleBalanceThresholdValue,
    NotificationRuleEntitlementResetCreateRequest,
)
from standardwebhooks.webhooks import Webhook
from tests.api import test_openmeter_entitlements_sdk as ents
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_sdk import Live
from tests.conftest import run_blocking
from tests.notifications.receiver import Received, Receiver

live, om = sdk.live, sdk.om

with warnings.catch_warnings():
    # Imported lazily by an HTTP client otherwise: requests probes for optional SOCKS support
    # on import and warns when it is missing, which this suite turns into an error mid-test.
    warnings.simplefilter("ignore")
    import requests.adapters  # noqa: F401
T = TypeVar("T")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def eventually(probe: Callable[[], T | None], seconds: float = 20) -> T:
    """Poll what the server's own delivery loop makes true (it runs on its clock, not ours)."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def channel(om: openmeter.Client, url: str, name: str = "ops", **extra: Any) -> Any:
    return om.notification_channels.create(
        NotificationChannelWebhookCreateRequest(type="WEBHOOK", name=name, url=url, **extra)
    )


def threshold_rule(om: openmeter.Client, channels: list[str], *levels: tuple[float, str],
                   **extra: Any) -> Any:
    return om.notification_rules.create(
        NotificationRuleBalanceThresholdCreateRequest(
            type="entitlements.balance.threshold", name="usage warnings", channels=channels,
            thresholds=[NotificationRuleBalanceThresholdValue(value=v, type=t)
                        for v, t in levels or [(80, "PERCENT")]],
            **extra,
        )
    )


def metered_tokens(om: openmeter.Client, included: float = 100) -> None:
    ents.customer(om)
    ents.tokens_feature(om)
    ents.metered(om, issue_after_reset=included)


def verified(got: Received, secret: str) -> Any:
    return Webhook(secret).verify(got.body, got.headers)


# --- delivery ----------------------------------------------------------------------------------


def test_threshold_event_reaches_the_channel_signed(om, receiver):
    """Usage past 80 % sends one signed event to the rule's channel, listed with its delivery."""
    ch = channel(om, receiver.url, custom_headers={"x-team": "billing"})
    metered_tokens(om)
    rule = threshold_rule(om, [ch["id"]], (80, "PERCENT"), features=["tokens"])

    ents.use(om, 85)
    got = eventually(lambda: receiver.received)[0]
    body = verified(got, ch["signingSecret"])  # in OpenMeter's form: the channel was made there
    assert (body["id"], body["type"]) == (got.webhook_id, "entitlements.balance.threshold")
    assert body["data"]["threshold"] == {"value": 80, "type": "PERCENT"}
    assert (body["data"]["value"]["usage"], body["data"]["entitlement"]["featureKey"]) == (85, "tokens")
    assert got.headers["x-team"] == "billing"

    def delivered() -> Any:
        page = om.notification_events.list()
        states = [s.state for e in page.items_property for s in e.delivery_status]
        return page if states == ["SUCCESS"] else None

    event = eventually(delivered).items_property[0]
    assert (event.id, event.type, event.rule["id"]) == (
        got.webhook_id, "entitlements.balance.threshold", rule["id"],
    )  # fmt: skip
    status = event.delivery_status[0]
    assert status.channel.id == ch["id"] and status.attempts[0].response.status_code == 200
    data = event.payload["data"]
    assert data["threshold"] == {"value": 80, "type": "PERCENT"}
    assert (data["value"]["usage"], data["value"]["balance"]) == (85, 15)
    assert data["feature"]["key"] == "tokens" and data["subject"]["key"] == "acme"
    assert body["data"] == orjson.loads(orjson.dumps(data))  # the webhook is the event's payload
    assert om.notification_events.get(event.id).id == event.id
    # Only what the rule asks for reaches a channel: no default 100 %, no overdraft.
    ents.use(om, 30)
    time.sleep(1)
    assert [r.json["type"] for r in receiver.received] == ["entitlements.balance.threshold"]


def test_a_balance_value_threshold_is_reached_when_that_much_is_left(om, receiver):
    """A `balance_value` of 20 of 100 included is reached at usage 80, not before, and is
    answered back as sent."""
    ch = channel(om, receiver.url)
    metered_tokens(om)
    rule = threshold_rule(om, [ch["id"]], (20, "balance_value"), features=["tokens"])
    assert [(t["value"], t["type"]) for t in om.notification_rules.get(rule["id"])["thresholds"]] \
        == [(20, "balance_value")]
    ents.use(om, 79)
    ents.use(om, 2)
    body = verified(eventually(lambda: receiver.received)[0], ch["signingSecret"])
    assert body["data"]["threshold"] == {"value": 20, "type": "balance_value"}
    assert (body["data"]["value"]["usage"], body["data"]["value"]["balance"]) == (81, 19)


def test_the_webhook_names_the_feature_by_its_name(om, receiver):
    """`feature.name` is the feature's name ("Tokens"), its key stays in `feature.key`."""
    ch = channel(om, receiver.url)
    metered_tokens(om)
    threshold_rule(om, [ch["id"]], (80, "PERCENT"), features=["tokens"])
    ents.use(om, 85)
    body = verified(eventually(lambda: receiver.received)[0], ch["signingSecret"])
    assert (body["data"]["feature"]["key"], body["data"]["feature"]["name"]) == ("tokens", "Tokens")


def test_reset_rule_and_events_filters(om, receiver):
    """Events list filters by rule, channel, feature and subject."""
    ch = channel(om, receiver.url)
    metered_tokens(om)
    rule = threshold_rule(om, [ch["id"]], (50, "NUMBER"))
    ents.use(om, 60)
    eventually(lambda: receiver.received)
    events = om.notification_events
    assert events.list(rule=[rule["id"]]).total_count == 1
    assert events.list(channel=[ch["id"]]).total_count == 1
    assert events.list(feature=["tokens"], subject=["acme"]).total_count == 1
    assert events.list(subject=["nobody"]).total_count == 0
    assert events.list(rule=["nrl_unknown"]).total_count == 0


def test_resend_delivers_again_with_the_same_webhook_id(om, receiver):
    ch = channel(om, receiver.url)
    metered_tokens(om)
    threshold_rule(om, [ch["id"]])
    ents.use(om, 90)
    first = eventually(lambda: receiver.received)[0]
    eventually(lambda: om.notification_events.list().items_property[0].delivery_status[0].state
               == "SUCCESS")

    om.notification_events.resend(first.webhook_id, NotificationEventResendRequest(channels=[ch["id"]]))
    again = eventually(lambda: receiver.received[1:])[0]
    assert again.webhook_id == first.webhook_id
    verified(again, ch["signingSecret"])


def test_rule_test_sends_through_the_outbox_to_its_channels(om, receiver):
    ch = channel(om, receiver.url)
    ents.tokens_feature(om)
    rule = om.notification_rules.create(
        NotificationRuleEntitlementResetCreateRequest(
            type="entitlements.reset", name="resets", channels=[ch["id"]], features=["tokens"]
        )
    )
    event = om.notification_rules.test(rule["id"])
    assert (event.type, event.rule["id"]) == ("entitlements.reset", rule["id"])
    got = eventually(lambda: receiver.received)[0]
    assert got.webhook_id == event.id
    assert verified(got, ch["signingSecret"])["data"]["rule_id"] == rule["id"]


# --- CRUD --------------------------------------------------------------------------------------


def test_channel_round_trip(om):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    created = channel(om, "https://example.com/hook", signing_secret=secret)
    assert (created["type"], created["name"], created["url"], created["disabled"]) == (
        "WEBHOOK", "ops", "https://example.com/hook", False,
    )  # fmt: skip
    assert created["signingSecret"] == secret and created["id"].startswith("whe_")
    assert om.notification_channels.get(created["id"])["url"] == "https://example.com/hook"

    updated = om.notification_channels.update(
        created["id"],
        NotificationChannelWebhookCreateRequest(
            type="WEBHOOK", name="renamed", url="https://example.com/v2", disabled=True,
            custom_headers={"x-env": "prod"},
        ),
    )
    assert (updated["name"], updated["url"], updated["disabled"]) == (
        "renamed", "https://example.com/v2", True,
    )  # fmt: skip
    assert updated["customHeaders"] == {"x-env": "prod"} and updated["signingSecret"] == secret
    assert om.notification_channels.list().total_count == 0  # disabled ones are left out
    assert om.notification_channels.list(include_disabled=True).total_count == 1

    om.notification_channels.delete(created["id"])
    with pytest.raises(ResourceNotFoundError):
        om.notification_channels.get(created["id"])
    gone = om.notification_channels.list(include_deleted=True).items_property
    assert [c["id"] for c in gone] == [created["id"]] and gone[0]["deletedAt"] is not None


def test_rule_round_trip(om):
    ch = channel(om, "https://example.com/hook")
    other = channel(om, "https://example.com/other", name="other")
    ents.tokens_feature(om)
    rule = threshold_rule(om, [ch["id"]], (80, "PERCENT"), (1000, "NUMBER"), features=["tokens"])
    assert (rule["type"], rule["name"], rule["disabled"]) == (
        "entitlements.balance.threshold", "usage warnings", False,
    )  # fmt: skip
    assert [c["id"] for c in rule["channels"]] == [ch["id"]]
    assert [(t["value"], t["type"]) for t in rule["thresholds"]] == [(80, "PERCENT"), (1000, "NUMBER")]
    assert [f["key"] for f in rule["features"]] == ["tokens"]
    assert om.notification_rules.get(rule["id"])["id"] == rule["id"]

    updated = om.notification_rules.update(
        rule["id"],
        NotificationRuleBalanceThresholdCreateRequest(
            type="entitlements.balance.threshold", name="renamed", channels=[other["id"]],
            thresholds=[NotificationRuleBalanceThresholdValue(value=90, type="usage_percentage")],
        ),
    )
    assert (updated["name"], [c["id"] for c in updated["channels"]]) == ("renamed", [other["id"]])
    assert [(t["value"], t["type"]) for t in updated["thresholds"]] == [(90, "PERCENT")]
    assert not updated.get("features")

    assert om.notification_rules.list(channel=[other["id"]]).total_count == 1
    assert om.notification_rules.list(channel=[ch["id"]]).total_count == 0
    om.notification_rules.delete(rule["id"])
    with pytest.raises(ResourceNotFoundError):
        om.notification_rules.get(rule["id"])


# --- bad input and tenancy ---------------------------------------------------------------------


def _problem(call: Callable[[], Any]) -> tuple[int, set[str]]:
    with pytest.raises(HttpResponseError) as err:
        call()
    body = err.value.response.json()
    return err.value.status_code, {e["field"] for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"url": "ftp://example.com"}, "url"),
        ({"signing_secret": "not-a-secret"}, "signingSecret"),
        ({"custom_headers": {"webhook-signature": "x"}}, "customHeaders"),
    ],
)
def test_bad_channel_is_a_400_naming_the_field(om, extra, field):
    inputs = {"url": "https://example.com/hook"} | extra
    status, fields = _problem(lambda: channel(om, **inputs))
    assert status == 400 and field in fields


def test_bad_rules_are_400s_naming_the_field(om):
    ch = channel(om, "https://example.com/hook")
    ents.tokens_feature(om)
    cases = [
        (lambda: threshold_rule(om, ["whe_nope"]), "channels[0]"),
        (lambda: threshold_rule(om, [ch["id"]], (10, "BALANCE")), "thresholds[0].type"),
        (lambda: threshold_rule(om, [ch["id"]], (-5, "NUMBER")), "thresholds[0].value"),
        (lambda: threshold_rule(om, [ch["id"]], features=["nope"]), "features[0]"),
        (lambda: om.notification_rules.create({"type": "invoice.created", "name": "x",
                                               "channels": [ch["id"]]}), "type"),
        (lambda: om.notification_rules.create({"type": "entitlements.balance.threshold",
                                               "name": "x", "channels": [ch["id"]]}), "thresholds"),
    ]  # fmt: skip
    for call, field in cases:
        status, fields = _problem(call)
        assert (status, field in fields) == (400, True), (field, fields)


def test_another_tenant_sees_no_channels_rules_or_events(om, receiver, settings):
    ch = channel(om, receiver.url)
    metered_tokens(om)
    rule = threshold_rule(om, [ch["id"]])
    ents.use(om, 90)
    event_id = eventually(lambda: receiver.received)[0].webhook_id

    other = Live(om._config.endpoint, run_blocking(sdk._tenant_keys(settings)))
    with other.client() as theirs:
        assert theirs.notification_channels.list(include_disabled=True).total_count == 0
        assert theirs.notification_rules.list().total_count == 0
        assert theirs.notification_events.list().total_count == 0
        for get in (lambda: theirs.notification_channels.get(ch["id"]),
                    lambda: theirs.notification_rules.get(rule["id"]),
                    lambda: theirs.notification_events.get(event_id)):
            with pytest.raises(ResourceNotFoundError):
                get()
        # Nor can it send to them.
        status, fields = _problem(lambda: threshold_rule(theirs, [ch["id"]]))
        assert status == 400 and "channels[0]" in fields


def test_read_key_lists_channels_without_their_secret(live, om):
    channel(om, "https://example.com/hook")
    with live.client("read") as reader:
        shown = reader.notification_channels.list().items_property
    assert len(shown) == 1 and "signingSecret" not in shown[0]


def test_read_key_sees_custom_header_names_but_not_their_values(live, om):
    """Custom headers may carry the receiver's credentials: only an admin key reads them."""
    made = channel(om, "https://example.com/hook", custom_headers={"authorization": "Bearer receiver-secret"})
    with live.client("read") as reader:
        shown = reader.notification_channels.get(made["id"])
    assert shown["customHeaders"] == {"authorization": "<redacted>"}
    assert om.notification_channels.get(made["id"])["customHeaders"] == {"authorization": "Bearer receiver-secret"}
